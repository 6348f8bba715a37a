'use strict';
// The package against a live gateway: aopay-sandbox and payout-server on
// loopback, started here in a temporary directory.
//
// Environment (ctest sets both):
//   PAYOUT_SERVER_BIN  the payout-server program
//   AOPAY_SANDBOX_BIN  the aopay-sandbox program
//
// The sandbox's journal is the witness of what AOPay received: every check
// of "sent once" counts the payout calls for one account number in it.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const {after, before, describe, it} = require('node:test');

const {
  PayoutClient, PayoutError, newRequestId, stateName, status,
} = require('..');
const {
  Gateway, Sandbox, beneficiary, eventually, hasOpenssl, makeCertificates,
  tempDir, uniqueAccount,
} = require('./support');

const root = tempDir('aopay_payouts_live_');
after(() => fs.rmSync(root, {recursive: true, force: true}));

function dir(name) {
  const result = path.join(root, name);
  fs.mkdirSync(result);
  return result;
}

// An onRetry hook that remembers its calls and may act on them.
function recorder(action = null) {
  const calls = [];
  const hook = async (attempt, error, delayMs) => {
    calls.push({attempt, error, delayMs});
    if (action) await action(attempt, error);
  };
  hook.calls = calls;
  return hook;
}

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('the call succeeded');
}

describe('payouts', () => {
  let sandbox;
  let gateway;
  let client;

  before(async () => {
    // 0504 accounts are answered after 3 s; payouts settle at once.
    sandbox = await new Sandbox(dir('sandbox'), ['--slow=3s', '--settle=0s'])
        .start();
    gateway = await new Gateway(dir('gateway'), sandbox.url).start();
    client = new PayoutClient(gateway.address);
  });

  after(async () => {
    client?.close();
    await gateway?.stop();
    await sandbox?.stop();
  });

  const create = (account, fields = {}, options = {}) => client.createPayout({
    requestId: newRequestId(), beneficiary: beneficiary(account),
    amountPaise: 1234, mode: 'IMPS', ...fields,
  }, options);

  it('sends a payout, replays it, reads and refreshes it', async () => {
    const account = uniqueAccount();
    const request = {
      requestId: newRequestId(),
      beneficiary: {...beneficiary(account), ifsc: 'sbin0000002',
        mobile: '+919959640000'},
      amountPaise: 1234, mode: 'IMPS',
    };
    const payout = await client.createPayout(request);
    assert.equal(stateName(payout.state), 'ACCEPTED');
    assert.match(payout.payoutId, /^po_/);
    assert.match(payout.transactionId, /^TERF/);
    assert.equal(payout.requestId, request.requestId);
    assert.equal(payout.amountPaise, '1234');
    assert.equal(payout.mode, 'TRANSFER_MODE_IMPS');
    assert.equal(payout.beneficiary.ifsc, 'SBIN0000002');
    assert.equal(payout.beneficiary.mobile, '9959640000');

    const replay = await client.createPayout(request);
    assert.equal(replay.payoutId, payout.payoutId);
    assert.equal(replay.transactionId, payout.transactionId);
    assert.equal(sandbox.payoutsFor(account), 1);

    assert.equal((await client.getPayout(payout.payoutId)).requestId,
        request.requestId);
    assert.equal((await client.getPayoutByRequestId(request.requestId))
        .payoutId, payout.payoutId);
    // The sandbox settles at once: the status endpoint says SUCCESS.
    const refreshed = await client.refreshPayout(payout.payoutId);
    assert.equal(stateName(refreshed.state), 'SUCCEEDED');
  });

  it('lists every page', async () => {
    const created = new Set();
    for (let i = 0; i < 5; i++) {
      created.add((await create(uniqueAccount())).payoutId);
    }
    const listed = [];
    for await (const payout of client.listPayouts({pageSize: 2})) {
      listed.push(payout.payoutId);
    }
    assert.equal(new Set(listed).size, listed.length, 'no repeats');
    for (const id of created) assert.ok(listed.includes(id), id);
    assert.deepEqual(listed, [...listed].sort().reverse(), 'newest first');
    const accepted = new Set();
    for await (const payout of client.listPayouts(
        {states: ['ACCEPTED'], pageSize: 2})) {
      accepted.add(payout.payoutId);
    }
    for (const id of created) assert.ok(accepted.has(id), id);
  });

  it('decodes every field violation of a refused request', async () => {
    const account = uniqueAccount();
    const requestId = newRequestId();
    const error = await rejection(client.createPayout({
      requestId,
      beneficiary: {accountNumber: account, ifsc: 'SBIN1234567', name: '',
        email: 'not-an-address', mobile: '12345'},
      amountPaise: 0, mode: 'TRANSFER_MODE_UNSPECIFIED',
    }));
    assert.ok(error instanceof PayoutError);
    assert.equal(error.code, status.INVALID_ARGUMENT);
    assert.equal(error.codeName, 'INVALID_ARGUMENT');
    assert.equal(error.reason, 'INVALID_REQUEST');
    assert.equal(error.domain, 'payout.aopay.v1');
    assert.equal(error.attempts, 1);
    assert.equal(error.retryDelayMs, null);
    assert.equal(error.requestId, requestId);
    assert.deepEqual(error.fieldViolations.map((v) => v.field).sort(), [
      'amount_paise', 'beneficiary.email', 'beneficiary.ifsc',
      'beneficiary.mobile', 'beneficiary.name', 'mode']);
    for (const violation of error.fieldViolations) {
      assert.ok(violation.description, violation.field);
    }

    // Nothing was recorded, nothing was sent.
    const missing = await rejection(client.getPayoutByRequestId(requestId));
    assert.equal(missing.code, status.NOT_FOUND);
    assert.equal(missing.reason, 'NOT_FOUND');
    assert.equal(sandbox.payoutsFor(account), 0);
  });

  it('does not retry a payout AOPay refused', async () => {
    const account = uniqueAccount('0409');
    const hook = recorder();
    const error = await rejection(create(account, {}, {retry: {onRetry: hook}}));
    assert.equal(error.code, status.ALREADY_EXISTS);
    assert.equal(error.reason, 'UPSTREAM_BENEFICIARY_EXISTS');
    assert.match(error.payoutId, /^po_/);
    assert.equal(error.metadata.upstreamHttpStatus, '409');
    assert.equal(error.attempts, 1);
    assert.equal(hook.calls.length, 0);
    assert.equal(sandbox.payoutsFor(account), 1);
  });

  it('never retries OUTCOME_UNKNOWN; an operator settles it', async () => {
    const account = uniqueAccount('0500');  // AOPay answers HTTP 500
    const requestId = newRequestId();
    const hook = recorder();
    const error = await rejection(create(account, {requestId},
        {retry: {maxAttempts: 10, onRetry: hook}}));
    assert.equal(error.code, status.DEADLINE_EXCEEDED);
    assert.equal(error.reason, 'OUTCOME_UNKNOWN');
    assert.equal(error.outcomeUnknown, true);
    assert.equal(error.attempts, 1);
    assert.equal(hook.calls.length, 0);
    assert.equal(error.metadata.upstreamHttpStatus, '500');
    assert.equal(sandbox.payoutsFor(account), 1);
    assert.equal(stateName((await client.getPayout(error.payoutId)).state),
        'UNKNOWN');

    // A retry by hand replays the verdict and sends nothing.
    const again = await rejection(create(account, {requestId}));
    assert.equal(again.reason, 'OUTCOME_UNKNOWN');
    assert.equal(again.attempts, 1);
    assert.equal(sandbox.payoutsFor(account), 1);

    const resolved = await client.resolvePayout({payoutId: error.payoutId,
      state: 'FAILED', note: 'AOPay support: never received'});
    assert.equal(stateName(resolved.state), 'FAILED');
    assert.equal(PayoutError.fromStatus(resolved.failure).reason,
        'RESOLVED_BY_OPERATOR');
    const settled = await create(account, {requestId});
    assert.equal(settled.payoutId, error.payoutId);
    assert.equal(stateName(settled.state), 'FAILED');
    assert.equal(sandbox.payoutsFor(account), 1);

    const twice = await rejection(client.resolvePayout(
        {payoutId: error.payoutId, state: 'SUCCEEDED', note: 'again'}));
    assert.equal(twice.reason, 'INVALID_TRANSITION');
  });

  it('retries REQUEST_IN_PROGRESS until the first call\'s outcome', async () => {
    const account = uniqueAccount('0504');  // answered after 3 s
    const requestId = newRequestId();
    const first = create(account, {requestId}, {retry: false});
    await eventually(() => sandbox.payoutsFor(account) === 1,
        {what: 'the first call reaching AOPay'});
    const hook = recorder();
    const second = await create(account, {requestId},
        {retry: {maxAttempts: 20, onRetry: hook}});
    const firstPayout = await first;
    assert.equal(second.payoutId, firstPayout.payoutId);
    assert.equal(stateName(second.state), 'ACCEPTED');
    assert.ok(hook.calls.length >= 1);
    for (const {error, delayMs} of hook.calls) {
      assert.equal(error.code, status.ABORTED);
      assert.equal(error.reason, 'REQUEST_IN_PROGRESS');
      assert.equal(error.payoutId, second.payoutId);
      assert.equal(error.retryDelayMs, 1000);
      assert.ok(delayMs >= 1000, 'RetryInfo is the floor');
    }
    assert.equal(sandbox.payoutsFor(account), 1);
  });

  it('retries a batch request in progress in a later round', async () => {
    const slow = uniqueAccount('0504');  // answered after 3 s
    const slowRequest = {requestId: newRequestId(),
      beneficiary: beneficiary(slow), amountPaise: 1500, mode: 'IMPS'};
    const first = client.createPayout(slowRequest, {retry: false});
    await eventually(() => sandbox.payoutsFor(slow) === 1,
        {what: 'the first call reaching AOPay'});
    const other = uniqueAccount();
    const requests = [slowRequest, {requestId: newRequestId(),
      beneficiary: beneficiary(other), amountPaise: 1600, mode: 'IMPS'}];
    const hook = recorder();
    const results = new Map();
    for await (const result of client.batchCreate(requests,
        {retry: {maxAttempts: 20, onRetry: hook}})) {
      results.set(result.requestId, result);
    }
    const firstPayout = await first;
    assert.equal(results.get(slowRequest.requestId).error, null);
    assert.equal(results.get(slowRequest.requestId).payout.payoutId,
        firstPayout.payoutId);
    assert.equal(stateName(results.get(requests[1].requestId).payout.state),
        'ACCEPTED');
    assert.ok(hook.calls.length >= 1);
    for (const {error, delayMs} of hook.calls) {
      assert.equal(error.reason, 'REQUEST_IN_PROGRESS');
      assert.equal(error.requestId, slowRequest.requestId);
      assert.ok(delayMs >= 1000);
    }
    assert.equal(sandbox.payoutsFor(slow), 1);
    assert.equal(sandbox.payoutsFor(other), 1);
  });

  it('answers every request of a batch, and a replayed batch', async () => {
    const good = [uniqueAccount(), uniqueAccount(), uniqueAccount()];
    const refused = uniqueAccount('0409');
    const requests = [...good, refused].map((account, i) => ({
      requestId: newRequestId(), beneficiary: beneficiary(account),
      amountPaise: 1000 + i, mode: 'NEFT',
    }));
    const invalid = {requestId: newRequestId(),
      beneficiary: beneficiary(uniqueAccount()), amountPaise: -5,
      mode: 'NEFT'};
    requests.push(invalid);

    const results = new Map();
    for await (const result of client.batchCreate(requests)) {
      results.set(result.requestId, result);
    }
    assert.deepEqual([...results.keys()].sort(),
        requests.map((r) => r.requestId).sort());
    for (const request of requests.slice(0, 3)) {
      const result = results.get(request.requestId);
      assert.equal(result.error, null);
      assert.equal(stateName(result.payout.state), 'ACCEPTED');
      assert.equal(result.payout.amountPaise, String(request.amountPaise));
    }
    const refusedResult = results.get(requests[3].requestId);
    assert.equal(refusedResult.error.reason, 'UPSTREAM_BENEFICIARY_EXISTS');
    assert.equal(refusedResult.error.requestId, requests[3].requestId);
    const invalidResult = results.get(invalid.requestId);
    assert.equal(invalidResult.error.reason, 'INVALID_REQUEST');
    assert.deepEqual(invalidResult.error.fieldViolations.map((v) => v.field),
        ['amount_paise']);

    // The whole batch again: the same payouts, nothing sent twice.
    const again = new Map();
    for await (const result of client.batchCreate(requests)) {
      again.set(result.requestId, result);
    }
    for (const request of requests.slice(0, 3)) {
      assert.equal(again.get(request.requestId).payout.payoutId,
          results.get(request.requestId).payout.payoutId);
    }
    for (const account of [...good, refused]) {
      assert.equal(sandbox.payoutsFor(account), 1, account);
    }
  });
});

describe('a retry after UNAVAILABLE', () => {
  it('sends once when AOPay was unreachable, then back', async () => {
    const sandbox = await new Sandbox(dir('sandbox_down')).start();
    const gateway = await new Gateway(dir('gateway_sandbox_down'),
        sandbox.url).start();
    try {
      // AOPay cannot be reached: UNAVAILABLE / UPSTREAM_UNAVAILABLE
      // (certainly not sent, the request id is free again).
      await sandbox.stop();
      const hook = recorder(async () => {
        if (!sandbox.process) await sandbox.start();
      });
      const account = uniqueAccount();
      const client = new PayoutClient(gateway.address,
          {retry: {maxAttempts: 3, onRetry: hook}});
      try {
        const payout = await client.createPayout({requestId: newRequestId(),
          beneficiary: beneficiary(account), amountPaise: 500, mode: 'IMPS'});
        assert.equal(stateName(payout.state), 'ACCEPTED');
      } finally {
        client.close();
      }
      assert.equal(hook.calls.length, 1);
      const {attempt, error, delayMs} = hook.calls[0];
      assert.equal(attempt, 1);
      assert.equal(error.code, status.UNAVAILABLE);
      assert.equal(error.reason, 'UPSTREAM_UNAVAILABLE');
      assert.equal(error.retryDelayMs, 1000);
      assert.ok(delayMs >= 1000);
      assert.equal(sandbox.payoutsFor(account), 1);
    } finally {
      await gateway.stop();
      await sandbox.stop();
    }
  });

  it('sends once when the gateway was down, then back on its ledger',
      async () => {
        const sandbox = await new Sandbox(dir('sandbox_gw_down')).start();
        const gateway = await new Gateway(dir('gateway_down'), sandbox.url)
            .start();
        try {
          await gateway.stop();  // the port and the ledger stay
          const hook = recorder(async () => {
            if (!gateway.process) await gateway.start();
          });
          const account = uniqueAccount();
          const client = new PayoutClient(gateway.address, {
            channelOptions: {
              'grpc.initial_reconnect_backoff_ms': 100,
              'grpc.max_reconnect_backoff_ms': 500,
            },
            retry: {maxAttempts: 8, initialBackoffMs: 200, onRetry: hook},
          });
          try {
            const payout = await client.createPayout({
              requestId: newRequestId(), beneficiary: beneficiary(account),
              amountPaise: 700, mode: 'NEFT'});
            assert.equal(stateName(payout.state), 'ACCEPTED');
          } finally {
            client.close();
          }
          assert.ok(hook.calls.length >= 1);
          for (const {error} of hook.calls) {
            // gRPC's own UNAVAILABLE: no connection, so no ErrorInfo.
            assert.equal(error.code, status.UNAVAILABLE);
            assert.equal(error.reason, '');
          }
          assert.equal(sandbox.payoutsFor(account), 1);
        } finally {
          await gateway.stop();
          await sandbox.stop();
        }
      });
});

describe('a batch after UNAVAILABLE', () => {
  it('sends each payout once when the gateway was down, then back',
      async () => {
        const sandbox = await new Sandbox(dir('sandbox_batch_down')).start();
        const gateway = await new Gateway(dir('gateway_batch_down'),
            sandbox.url).start();
        try {
          await gateway.stop();
          const hook = recorder(async () => {
            if (!gateway.process) await gateway.start();
          });
          const accounts = [uniqueAccount(), uniqueAccount(), uniqueAccount()];
          const requests = accounts.map((account) => ({
            requestId: newRequestId(), beneficiary: beneficiary(account),
            amountPaise: 900, mode: 'NEFT'}));
          const client = new PayoutClient(gateway.address, {
            channelOptions: {
              'grpc.initial_reconnect_backoff_ms': 100,
              'grpc.max_reconnect_backoff_ms': 500,
            },
            retry: {maxAttempts: 8, initialBackoffMs: 200, onRetry: hook},
          });
          const results = [];
          try {
            for await (const result of client.batchCreate(requests)) {
              results.push(result);
            }
          } finally {
            client.close();
          }
          assert.deepEqual(results.map((r) => r.requestId).sort(),
              requests.map((r) => r.requestId).sort());
          for (const result of results) {
            assert.equal(result.error, null, String(result.error));
            assert.equal(stateName(result.payout.state), 'ACCEPTED');
          }
          assert.ok(hook.calls.length >= 1);
          assert.equal(hook.calls[0].error.code, status.UNAVAILABLE);
          for (const account of accounts) {
            assert.equal(sandbox.payoutsFor(account), 1, account);
          }
        } finally {
          await gateway.stop();
          await sandbox.stop();
        }
      });
});

describe('TLS and tokens', {skip: !hasOpenssl() && 'the openssl command is needed'}, () => {
  const token = 'payroll-' + crypto.randomBytes(16).toString('hex');
  const readerToken = 'reader-' + crypto.randomBytes(16).toString('hex');
  let certs;
  let gateway;
  let mtlsGateway;
  const clients = [];
  const cert = (name) => path.join(certs, name);

  before(async () => {
    certs = dir('certs');
    makeCertificates(certs);
    const sha256 = (text) => crypto.createHash('sha256').update(text)
        .digest('hex');
    fs.writeFileSync(cert('clients'),
        `payroll-svc ${sha256(token)} payouts:write,payouts:read\n` +
        `reader ${sha256(readerToken)} payouts:read\n` +
        'batch-host - payouts:write,payouts:read\n');
    const tls = [`--clients=${cert('clients')}`,
      `--tls_cert=${cert('server.crt')}`, `--tls_key=${cert('server.key')}`];
    gateway = await new Gateway(dir('gateway_tls'), 'sandbox', tls).start();
    mtlsGateway = await new Gateway(dir('gateway_mtls'), 'sandbox',
        [...tls, `--tls_client_ca=${cert('ca.crt')}`]).start();
  });

  after(async () => {
    for (const client of clients) client.close();
    await gateway?.stop();
    await mtlsGateway?.stop();
  });

  const client = (options, target = gateway) => {
    // The certificate names localhost (and 127.0.0.1); the target is an
    // address, so the name to check is given.
    const made = new PayoutClient(target.address,
        {rootCerts: cert('ca.crt'), tlsServerName: 'localhost', ...options});
    clients.push(made);
    return made;
  };
  const payout = (c) => c.createPayout({requestId: newRequestId(),
    beneficiary: beneficiary(uniqueAccount()), amountPaise: 2500,
    mode: 'IMPS'});

  it('sends the bearer token over TLS', async () => {
    const c = client({token});
    const created = await payout(c);
    assert.equal(stateName(created.state), 'ACCEPTED');
    assert.equal(created.client, 'payroll-svc');
    const ids = [];
    for await (const p of c.listPayouts()) ids.push(p.payoutId);
    assert.ok(ids.includes(created.payoutId));
  });

  it('is UNAUTHENTICATED without a known token', async () => {
    for (const t of [null, 'not-a-token']) {
      const error = await rejection(payout(client({token: t})));
      assert.equal(error.code, status.UNAUTHENTICATED);
      assert.equal(error.reason, 'UNAUTHENTICATED');
      assert.equal(error.attempts, 1);
      assert.ok(!String(error).includes('not-a-token'));
    }
  });

  it('answers every request of a batch sent without a token', async () => {
    const requests = [0, 1].map(() => ({requestId: newRequestId(),
      beneficiary: beneficiary(uniqueAccount()), amountPaise: 100,
      mode: 'IMPS'}));
    const results = [];
    for await (const result of client({}).batchCreate(requests)) {
      results.push(result);
    }
    assert.deepEqual(results.map((r) => r.requestId).sort(),
        requests.map((r) => r.requestId).sort());
    for (const result of results) {
      assert.equal(result.payout, null);
      assert.equal(result.error.code, status.UNAUTHENTICATED);
      assert.equal(result.error.requestId, result.requestId);
      assert.equal(result.error.attempts, 1);
    }
  });

  it('is PERMISSION_DENIED without the scope', async () => {
    const error = await rejection(payout(client({token: readerToken})));
    assert.equal(error.code, status.PERMISSION_DENIED);
    assert.match(error.details, /payouts:write/);
  });

  it('checks the server certificate', async () => {
    // The system's CAs do not know the test CA: the handshake fails.
    const error = await rejection(payout(client({tls: true, rootCerts: null,
      token, retry: false})));
    assert.equal(error.code, status.UNAVAILABLE);
    assert.equal(error.reason, '');
  });

  it('names the client by its certificate over mTLS', async () => {
    const mtls = {certChain: cert('batch-host.crt'),
      privateKey: cert('batch-host.key')};
    assert.equal((await payout(client(mtls, mtlsGateway))).client,
        'batch-host');
    // A token still wins over the certificate.
    assert.equal((await payout(client({...mtls, token}, mtlsGateway))).client,
        'payroll-svc');
    // Without a client certificate there is no connection at all.
    const error = await rejection(payout(client({token, retry: false},
        mtlsGateway)));
    assert.equal(error.code, status.UNAVAILABLE);
  });
});

describe('approvals and metadata', {skip: !hasOpenssl() && 'the openssl command is needed'}, () => {
  // Maker-checker over TLS with bearer tokens, against a sandbox whose
  // journal shows what AOPay received: the maker's payouts above 1000 paise
  // wait for the checker's approval.
  const tokens = Object.fromEntries(['maker', 'checker', 'ops'].map(
      (name) => [name, `${name}-` + crypto.randomBytes(16).toString('hex')]));
  let certs;
  let sandbox;
  let gateway;
  let maker;
  let checker;
  let ops;
  const clients = [];
  const cert = (name) => path.join(certs, name);
  const tlsFlags = () => [`--clients=${cert('clients')}`,
    `--tls_cert=${cert('server.crt')}`, `--tls_key=${cert('server.key')}`];
  const client = (target, token, options = {}) => {
    const made = new PayoutClient(target.address, {rootCerts: cert('ca.crt'),
      tlsServerName: 'localhost', token, ...options});
    clients.push(made);
    return made;
  };

  before(async () => {
    certs = dir('approval_certs');
    makeCertificates(certs);
    const sha256 = (text) => crypto.createHash('sha256').update(text)
        .digest('hex');
    fs.writeFileSync(cert('clients'),
        `maker ${sha256(tokens.maker)} payouts:write,payouts:read ` +
            'approval_above_paise=1000\n' +
        `checker ${sha256(tokens.checker)} approve\n` +
        // May approve, and holds its own payouts too.
        `ops ${sha256(tokens.ops)} payouts:write,approve ` +
            'approval_above_paise=1000\n');
    sandbox = await new Sandbox(dir('approval_sandbox')).start();
    gateway = await new Gateway(dir('approval_gateway'), sandbox.url,
        tlsFlags()).start();
    maker = client(gateway, tokens.maker);
    checker = client(gateway, tokens.checker);
    ops = client(gateway, tokens.ops);
  });

  after(async () => {
    for (const c of clients) c.close();
    await gateway?.stop();
    await sandbox?.stop();
  });

  // A payout above the threshold: recorded, held, not sent.
  const hold = async (account, {by = maker, requestId = newRequestId(),
    metadata = {invoice: `INV-${account}`}} = {}) => {
    const payout = await by.createPayout({requestId,
      beneficiary: beneficiary(account), amountPaise: 2500, mode: 'IMPS',
      metadata});
    assert.equal(stateName(payout.state), 'AWAITING_APPROVAL');
    return payout;
  };

  const refused = async (promise, code, reason) => {
    const error = await rejection(promise);
    assert.ok(error instanceof PayoutError, String(error));
    assert.equal(error.code, code, String(error));
    assert.equal(error.reason, reason, String(error));
    assert.equal(error.attempts, 1);
    return error;
  };

  it('holds a payout until the checker approves it, then sends it once',
      async () => {
        const account = uniqueAccount();
        const metadata = {invoice: 'INV-2024-0042', employee_id: 'E-7'};
        const held = await hold(account, {metadata});
        assert.deepEqual(held.metadata, metadata);
        assert.equal(held.client, 'maker');
        assert.equal(held.transactionId, '');
        assert.equal(sandbox.payoutsFor(account), 0);

        // The maker lacks the approve scope.
        const error = await refused(maker.approvePayout({
          payoutId: held.payoutId, note: 'my own'}),
        status.PERMISSION_DENIED, 'PERMISSION_DENIED');
        assert.match(error.details, /approve/);
        assert.equal(sandbox.payoutsFor(account), 0);

        const approved = await checker.approvePayout({payoutId: held.payoutId,
          note: 'checked against the invoice'});
        assert.equal(stateName(approved.state), 'ACCEPTED');
        assert.equal(approved.payoutId, held.payoutId);
        assert.match(approved.transactionId, /^TERF/);
        assert.deepEqual(approved.metadata, metadata);
        assert.equal(approved.client, 'maker');
        assert.equal(sandbox.payoutsFor(account), 1);

        // Approving again changes nothing and sends nothing.
        await refused(checker.approvePayout({payoutId: held.payoutId,
          note: 'again'}), status.FAILED_PRECONDITION,
        'NOT_AWAITING_APPROVAL');
        const read = await maker.getPayout(held.payoutId);
        assert.equal(stateName(read.state), 'ACCEPTED');
        assert.deepEqual(read.metadata, metadata);
        assert.equal(sandbox.payoutsFor(account), 1);
        // The metadata never reaches AOPay.
        for (const entry of sandbox.journal()) {
          assert.ok(!JSON.stringify(entry).includes('INV-2024-0042'));
        }
      });

  it('cancels a rejected payout, never sent', async () => {
    const account = uniqueAccount();
    const held = await hold(account);
    const rejected = await checker.rejectPayout({payoutId: held.payoutId,
      note: 'no such invoice'});
    assert.equal(stateName(rejected.state), 'CANCELLED');
    assert.equal(rejected.payoutId, held.payoutId);
    await refused(checker.approvePayout({payoutId: held.payoutId,
      note: 'late'}), status.FAILED_PRECONDITION, 'NOT_AWAITING_APPROVAL');
    await refused(maker.cancelPayout({payoutId: held.payoutId}),
        status.FAILED_PRECONDITION, 'NOT_CANCELLABLE');
    assert.equal(sandbox.payoutsFor(account), 0);
  });

  it('lets the maker cancel once', async () => {
    const account = uniqueAccount();
    const held = await hold(account);
    const cancelled = await maker.cancelPayout({payoutId: held.payoutId,
      note: 'wrong amount'});
    assert.equal(stateName(cancelled.state), 'CANCELLED');
    await refused(maker.cancelPayout({payoutId: held.payoutId}),
        status.FAILED_PRECONDITION, 'NOT_CANCELLABLE');
    await refused(checker.approvePayout({payoutId: held.payoutId,
      note: 'late'}), status.FAILED_PRECONDITION, 'NOT_AWAITING_APPROVAL');
    assert.equal(stateName((await maker.getPayout(held.payoutId)).state),
        'CANCELLED');
    assert.equal(sandbox.payoutsFor(account), 0);
  });

  it('lets only the creator cancel, and never approve', async () => {
    const ownAccount = uniqueAccount();
    const own = await hold(ownAccount, {by: ops});
    await refused(ops.approvePayout({payoutId: own.payoutId, note: 'mine'}),
        status.PERMISSION_DENIED, 'SELF_APPROVAL');
    await refused(ops.rejectPayout({payoutId: own.payoutId, note: 'mine'}),
        status.PERMISSION_DENIED, 'SELF_APPROVAL');
    // The maker may not see another client's payout at all.
    await refused(maker.cancelPayout({payoutId: own.payoutId}),
        status.NOT_FOUND, 'NOT_FOUND');

    const account = uniqueAccount();
    const held = await hold(account);
    // ops may write and read every payout, but did not create this one.
    await refused(ops.cancelPayout({payoutId: held.payoutId}),
        status.FAILED_PRECONDITION, 'NOT_CANCELLABLE');
    // The checker lacks payouts:write, which CancelPayout needs.
    await refused(checker.cancelPayout({payoutId: held.payoutId}),
        status.PERMISSION_DENIED, 'PERMISSION_DENIED');
    for (const payout of [own, held]) {
      assert.equal(stateName((await checker.getPayout(payout.payoutId))
          .state), 'AWAITING_APPROVAL');
    }
    assert.equal(sandbox.payoutsFor(ownAccount), 0);
    assert.equal(sandbox.payoutsFor(account), 0);
  });

  it('sends a payout at the threshold at once, with its metadata',
      async () => {
        const account = uniqueAccount();
        const payout = await maker.createPayout({requestId: newRequestId(),
          beneficiary: beneficiary(account), amountPaise: 1000, mode: 'NEFT',
          metadata: {invoice: 'INV-small'}});
        assert.equal(stateName(payout.state), 'ACCEPTED');
        assert.deepEqual(payout.metadata, {invoice: 'INV-small'});
        assert.equal(sandbox.payoutsFor(account), 1);
      });

  it('refuses the same request id with other metadata', async () => {
    const account = uniqueAccount();
    const requestId = newRequestId();
    const held = await hold(account, {requestId,
      metadata: {invoice: 'INV-1'}});
    const replay = await hold(account, {requestId,
      metadata: {invoice: 'INV-1'}});
    assert.equal(replay.payoutId, held.payoutId);
    for (const other of [{invoice: 'INV-2'}, {invoice: 'INV-1', x: 'y'}, {}]) {
      const error = await refused(hold(account, {requestId, metadata: other}),
          status.INVALID_ARGUMENT, 'REQUEST_ID_REUSED');
      assert.equal(error.payoutId, held.payoutId);
      assert.equal(error.requestId, requestId);
    }
    assert.deepEqual((await maker.getPayoutByRequestId(requestId)).metadata,
        {invoice: 'INV-1'});
    assert.equal(sandbox.payoutsFor(account), 0);
  });

  it('retries an approval after UPSTREAM_UNAVAILABLE and sends once',
      async () => {
        // AOPay cannot be reached: the approval answers UNAVAILABLE /
        // UPSTREAM_UNAVAILABLE, the payout awaits approval again, and the
        // client's retry approves and sends it once AOPay is back.
        const downSandbox = await new Sandbox(dir('approval_sandbox_down'))
            .start();
        const downGateway = await new Gateway(dir('approval_gateway_down'),
            downSandbox.url, tlsFlags()).start();
        try {
          const downMaker = client(downGateway, tokens.maker);
          const account = uniqueAccount();
          const held = await hold(account, {by: downMaker});
          await downSandbox.stop();
          const seen = [];
          const hook = recorder(async () => {
            seen.push(stateName((await downMaker.getPayout(held.payoutId))
                .state));
            if (!downSandbox.process) await downSandbox.start();
          });
          const downChecker = client(downGateway, tokens.checker,
              {retry: {maxAttempts: 3, onRetry: hook}});
          const approved = await downChecker.approvePayout({
            payoutId: held.payoutId, note: 'checked'});
          assert.equal(stateName(approved.state), 'ACCEPTED');
          assert.equal(hook.calls.length, 1);
          const {attempt, error, delayMs} = hook.calls[0];
          assert.equal(attempt, 1);
          assert.equal(error.code, status.UNAVAILABLE);
          assert.equal(error.reason, 'UPSTREAM_UNAVAILABLE');
          assert.ok(delayMs >= 1000, String(delayMs));
          assert.deepEqual(seen, ['AWAITING_APPROVAL']);
          assert.equal(downSandbox.payoutsFor(account), 1);
        } finally {
          await downGateway.stop();
          await downSandbox.stop();
        }
      });
});

describe('watching payouts', () => {
  // Payouts settle at once: a refresh moves ACCEPTED to SUCCEEDED.
  let sandbox;
  const clients = [];

  before(async () => {
    sandbox = await new Sandbox(dir('watch_sandbox'), ['--settle=0s'])
        .start();
  });

  after(async () => {
    for (const c of clients) c.close();
    await sandbox?.stop();
  });

  // Fast reconnects: the channel's own backoff and the watch's.
  const client = (gateway) => {
    const made = new PayoutClient(gateway.address, {channelOptions: {
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 500,
    }});
    clients.push(made);
    return made;
  };
  const watchRetry = (onRetry) => ({maxAttempts: 200, initialBackoffMs: 50,
    maxBackoffMs: 200, maxElapsedMs: 60000, onRetry});

  // Reads a watch in the background, as a program would; `done` rejects
  // when the watch gives up.
  function follow(watch) {
    const events = [];
    const done = (async () => {
      for await (const event of watch) events.push(event);
    })();
    done.catch(() => {});  // the test awaits it
    return {events, done};
  }

  // A payout through its life: PENDING, ACCEPTED, SUCCEEDED.
  async function payAndSettle(c) {
    const payout = await c.createPayout({requestId: newRequestId(),
      beneficiary: beneficiary(uniqueAccount()), amountPaise: 1100,
      mode: 'IMPS'});
    assert.equal(stateName(payout.state), 'ACCEPTED');
    const settled = await c.refreshPayout(payout.payoutId);
    assert.equal(stateName(settled.state), 'SUCCEEDED');
    return payout.payoutId;
  }

  const LIFE = [['UNSPECIFIED', 'PENDING'], ['PENDING', 'ACCEPTED'],
    ['ACCEPTED', 'SUCCEEDED']];
  const ofPayouts = (events, ids) =>
    events.filter((e) => ids.includes(e.payout.payoutId));
  const complete = (events, ids) =>
    ofPayouts(events, ids).length >= ids.length * LIFE.length;

  // Every change of every payout in ids exactly once and in order, and
  // nothing of any other payout.
  function assertEveryChangeOnce(events, ids) {
    const cursors = events.map((e) => e.cursor);
    assert.equal(new Set(cursors).size, cursors.length, 'a cursor twice');
    assert.deepEqual(events.filter((e) => !ids.includes(e.payout.payoutId))
        .map((e) => e.payout.payoutId), [], 'events of other payouts');
    for (const id of ids) {
      assert.deepEqual(events.filter((e) => e.payout.payoutId === id)
          .map((e) => [stateName(e.previousState), stateName(e.payout.state)]),
      LIFE, id);
    }
  }

  // A watch follows payouts made before the gateway goes down (stop), made
  // once it is back on its port and ledger but before the watch reconnects,
  // and made after; the test closes it.
  async function acrossRestart(name, stop, firstError) {
    const gateway = await new Gateway(dir(name), sandbox.url).start();
    let watch = null;
    try {
      const c = client(gateway);
      let stopped = null;  // the stop, once begun
      const meanwhile = [];
      const hook = recorder(async () => {
        if (meanwhile.length) return;
        await stopped;
        await gateway.start();
        meanwhile.push(await payAndSettle(c), await payAndSettle(c));
      });
      watch = c.watchPayouts({retry: watchRetry(hook)});
      const {events, done} = follow(watch);
      await eventually(() => watch.cursor !== null,
          {what: 'the watch opening'});
      const ids = [await payAndSettle(c), await payAndSettle(c)];
      await eventually(() => complete(events, ids),
          {what: 'the first payouts\' events'});
      assert.equal(hook.calls.length, 0);

      stopped = stop(gateway);
      await stopped;
      await eventually(() => meanwhile.length &&
          complete(events, [...ids, ...meanwhile]),
      {timeoutMs: 20000, what: 'the events of the payouts made meanwhile'});
      ids.push(...meanwhile);
      // The last one comes after every other: a repeat of an earlier event
      // would be seen before it.
      ids.push(await payAndSettle(c));
      await eventually(() => complete(events, ids),
          {what: 'the last payout\'s events'});
      watch.close();
      await done;  // close() ends it; not an error

      assertEveryChangeOnce(events, ids);
      assert.equal(watch.cursor, events[events.length - 1].cursor);
      assert.ok(hook.calls.length >= 1);
      assert.equal(hook.calls[0].attempt, 1);
      assert.equal(hook.calls[0].error.code, firstError.code);
      assert.equal(hook.calls[0].error.reason, firstError.reason);
      for (const {error} of hook.calls) {
        assert.equal(error.code, status.UNAVAILABLE, String(error));
      }
    } finally {
      watch?.close();
      await gateway.stop();
    }
  }

  it('delivers every change once across a gateway restart', async () => {
    let stopMs = 0;
    await acrossRestart('watch_gateway_term', async (gateway) => {
      const started = Date.now();
      await gateway.stop();  // SIGTERM; exits 0
      stopMs = Date.now() - started;
    }, {code: status.UNAVAILABLE, reason: 'SHUTTING_DOWN'});
    // --shutdown_grace=10s: an open watch must not hold the shutdown.
    assert.ok(stopMs < 5000, `the gateway took ${stopMs} ms to stop`);
  });

  it('delivers every change once across a killed gateway', async () => {
    // SIGKILL: the connection breaks, so no ErrorInfo.
    await acrossRestart('watch_gateway_kill', (gateway) => gateway.kill(),
        {code: status.UNAVAILABLE, reason: ''});
  });

  it('misses nothing made while a watch started from now reconnects',
      async () => {
        const gateway = await new Gateway(dir('watch_gateway_head'),
            sandbox.url).start();
        let watch = null;
        try {
          const c = client(gateway);
          const earlier = await payAndSettle(c);  // before the watch
          const ids = [];
          // The gateway comes back and payouts are made while the watch
          // waits to reconnect.
          let restarted = false;
          const hook = recorder(async () => {
            if (restarted) return;
            restarted = true;
            await gateway.start();  // stopped before the watch was read
            ids.push(await payAndSettle(c), await payAndSettle(c));
          });
          watch = c.watchPayouts({retry: watchRetry(hook)});
          await eventually(() => watch.cursor !== null,
              {what: 'the watch opening'});
          // The stream breaks before its first event: only its header
          // says where it started.
          await gateway.stop();
          const {events, done} = follow(watch);
          await eventually(() => ids.length === 2 && complete(events, ids),
              {timeoutMs: 20000, what: 'the payouts made meanwhile'});
          ids.push(await payAndSettle(c));
          await eventually(() => complete(events, ids),
              {what: 'the last payout\'s events'});
          watch.close();
          await done;

          assertEveryChangeOnce(events, ids);
          assert.ok(!ids.includes(earlier));
          assert.equal(hook.calls[0].error.reason, 'SHUTTING_DOWN');
        } finally {
          watch?.close();
          await gateway.stop();
        }
      });

  it('resumes from a stored cursor and refuses one it did not make',
      async () => {
        const gateway = await new Gateway(dir('watch_gateway_cursor'),
            sandbox.url).start();
        const watches = [];
        try {
          const c = client(gateway);
          const watch = (options) => {
            const made = c.watchPayouts(options);
            watches.push(made);
            return made;
          };
          const first = watch();
          await eventually(() => first.cursor !== null,
              {what: 'the watch opening'});
          const id = await payAndSettle(c);
          const seen = [];
          for await (const event of first) {
            seen.push(event);
            if (seen.length === LIFE.length) break;
          }
          assertEveryChangeOnce(seen, [id]);
          const stored = first.cursor;  // what a program would store
          assert.equal(stored, seen[2].cursor);

          const next = await payAndSettle(c);
          const second = watch({afterCursor: stored, states: ['SUCCEEDED']});
          const {value} = await second[Symbol.asyncIterator]().next();
          assert.equal(value.payout.payoutId, next);
          assert.equal(stateName(value.previousState), 'ACCEPTED');
          assert.equal(stateName(value.payout.state), 'SUCCEEDED');
          assert.equal(value.payout.amountPaise, '1100');
          assert.equal(value.payout.mode, 'TRANSFER_MODE_IMPS');
          second.close();

          const hook = recorder();
          const error = await rejection(watch({afterCursor: 'garbage',
            retry: {onRetry: hook}})[Symbol.asyncIterator]().next());
          assert.ok(error instanceof PayoutError);
          assert.equal(error.code, status.INVALID_ARGUMENT);
          assert.equal(error.reason, 'INVALID_REQUEST');
          assert.deepEqual(error.fieldViolations.map((v) => v.field),
              ['after_cursor']);
          assert.equal(error.attempts, 1);
          assert.equal(hook.calls.length, 0);
        } finally {
          for (const made of watches) made.close();
          await gateway.stop();
        }
      });
});
