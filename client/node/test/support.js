'use strict';
// Real processes for the live tests: aopay-sandbox and payout-server on
// 127.0.0.1:0 (AOPAY_SANDBOX_BIN and PAYOUT_SERVER_BIN name the programs).
// Nothing here sleeps to synchronise: a process is ready when it prints its
// "listening on HOST:PORT" line, and other conditions are polled with a
// deadline (eventually()).

const {execFileSync, spawn} = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const START_TIMEOUT_MS = 30000;
const STOP_TIMEOUT_MS = 30000;

function program(variable) {
  const value = process.env[variable];
  if (!value) throw new Error(`${variable} must name the program (ctest sets it)`);
  return value;
}

function tail(file, limit = 4000) {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.slice(-limit);
  } catch (error) {
    return `(unreadable: ${error.message})`;
  }
}

function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

async function eventually(condition, {timeoutMs = 10000, what = 'the condition'} = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`${what} did not hold within ${timeoutMs} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// A child with stdout on a pipe (for its readiness line) and stderr in a
// file. start() resolves to its address.
class Process {
  constructor(argv, stderrPath) {
    this.argv = argv;
    this.stderrPath = stderrPath;
  }

  start() {
    // The gateway reads PAYOUT_<FLAG> variables: none may leak in.
    const env = Object.fromEntries(Object.entries(process.env)
        .filter(([key]) => !key.startsWith('PAYOUT_')));
    const stderr = fs.openSync(this.stderrPath, 'a');
    this.child = spawn(this.argv[0], this.argv.slice(1),
        {stdio: ['ignore', 'pipe', stderr], env});
    fs.closeSync(stderr);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => resolve({code, signal}));
    });
    return new Promise((resolve, reject) => {
      let pending = '';
      let ready = false;
      const timer = setTimeout(() => {
        this.child.kill('SIGKILL');
        reject(new Error(`${this.argv[0]}: no 'listening on' line within ` +
                         `${START_TIMEOUT_MS} ms; stderr:\n${tail(this.stderrPath)}`));
      }, START_TIMEOUT_MS);
      this.child.stdout.on('data', (chunk) => {
        if (ready) return;  // keep draining
        pending += chunk.toString();
        const lines = pending.split('\n');
        pending = lines.pop();
        for (const line of lines) {
          if (line.startsWith('listening on ')) {
            ready = true;
            clearTimeout(timer);
            resolve(line.slice('listening on '.length).trim());
            return;
          }
        }
      });
      this.exited.then(({code, signal}) => {
        if (ready) return;
        clearTimeout(timer);
        reject(new Error(`${this.argv[0]} exited (${code ?? signal}) before ` +
                         `listening; stderr:\n${tail(this.stderrPath)}`));
      });
    });
  }

  // SIGTERM, then the exit status.
  async stop() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
    }
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS);
    });
    const result = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (result === null) {
      this.child.kill('SIGKILL');
      throw new Error(`${this.argv[0]} ignored SIGTERM; stderr:\n${tail(this.stderrPath)}`);
    }
    return result;
  }

  // SIGKILL, then the exit status.
  async kill() {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
    }
    return this.exited;
  }
}

// aopay-sandbox with a journal; restartable on the same port and journal.
class Sandbox {
  constructor(dir, flags = []) {
    this.dir = dir;
    this.flags = flags;
    this.journalPath = path.join(dir, 'journal.jsonl');
    this.address = null;
    this.process = null;
  }

  async start() {
    const proc = new Process([
      program('AOPAY_SANDBOX_BIN'), `--listen=${this.address || '127.0.0.1:0'}`,
      `--journal=${this.journalPath}`, ...this.flags,
    ], path.join(this.dir, 'sandbox.stderr'));
    this.address = await proc.start();
    this.process = proc;
    return this;
  }

  get url() {
    return `http://${this.address}`;
  }

  async stop() {
    if (this.process) {
      const proc = this.process;
      this.process = null;
      await proc.stop();
    }
  }

  journal() {
    let text = '';
    try {
      text = fs.readFileSync(this.journalPath, 'utf8');
    } catch (error) {
      if (error.code === 'ENOENT') return [];
      throw error;
    }
    const entries = [];
    for (const line of text.split('\n')) {
      try {
        entries.push(JSON.parse(line));
      } catch (_) {
        // an empty or partial line
      }
    }
    return entries;
  }

  // How many payout calls AOPay received for this account number.
  payoutsFor(account) {
    let count = 0;
    for (const entry of this.journal()) {
      if (entry.path !== '/api/V6/Payout/AOPPayout') continue;
      try {
        if (JSON.parse(entry.body).accountNumber === account) count++;
      } catch (_) {
        // not a JSON body
      }
    }
    return count;
  }
}

// payout-server; restartable on the same port and ledger.
class Gateway {
  constructor(dir, aopayUrl, flags = []) {
    this.dir = dir;
    this.aopayUrl = aopayUrl;
    this.flags = flags;
    this.ledger = path.join(dir, 'ledger.db');
    this.address = null;
    this.process = null;
  }

  async start() {
    const argv = [
      program('PAYOUT_SERVER_BIN'), `--listen=${this.address || '127.0.0.1:0'}`,
      '--metrics_listen=127.0.0.1:0', `--aopay_url=${this.aopayUrl}`,
      `--ledger=sqlite:${this.ledger}`, '--shutdown_grace=10s',
    ];
    if (this.aopayUrl !== 'sandbox') argv.push('--registration_id=AOP-SANDBOX');
    const proc = new Process([...argv, ...this.flags],
        path.join(this.dir, 'gateway.stderr'));
    this.address = await proc.start();
    this.process = proc;
    return this;
  }

  // A clean shutdown exits 0.
  async stop() {
    if (!this.process) return;
    const proc = this.process;
    this.process = null;
    const {code, signal} = await proc.stop();
    if (code !== 0) {
      throw new Error(`payout-server exited with ${code ?? signal}; stderr:\n` +
                      tail(path.join(this.dir, 'gateway.stderr')));
    }
  }

  // SIGKILL: no clean shutdown; start() brings it back on the same port and
  // ledger.
  async kill() {
    if (!this.process) return;
    const proc = this.process;
    this.process = null;
    await proc.kill();
  }
}

let accounts = 0;

// A 12-digit account number no other test uses, ending in `suffix` (the
// sandbox's script: 1836 is paid, 0500 is an HTTP 500, ...).
function uniqueAccount(suffix = '1836') {
  accounts++;
  return String(process.pid % 10000).padStart(4, '0') +
      String(accounts).padStart(4, '0') + suffix;
}

function beneficiary(accountNumber) {
  return {accountNumber, ifsc: 'SBIN0000002', name: 'Dean Jon',
    email: 'abc@gmail.com', mobile: '9959640000'};
}

function hasOpenssl() {
  try {
    execFileSync('openssl', ['version'], {stdio: 'ignore'});
    return true;
  } catch (_) {
    return false;
  }
}

// A CA, a server certificate for localhost and 127.0.0.1, and a client
// certificate whose CN is batch-host.
function makeCertificates(dir) {
  const openssl = (...args) => execFileSync('openssl', args,
      {cwd: dir, stdio: ['ignore', 'ignore', 'pipe']});
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
      '-subj', '/CN=test payout CA', '-keyout', 'ca.key', '-out', 'ca.crt');
  fs.writeFileSync(path.join(dir, 'server.ext'),
      'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  for (const [name, subject, ext] of [
    ['server', '/CN=localhost', ['-extfile', 'server.ext']],
    ['batch-host', '/CN=batch-host', []],
  ]) {
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', subject,
        '-keyout', `${name}.key`, '-out', `${name}.csr`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt',
        '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
        '-out', `${name}.crt`, ...ext);
  }
}

module.exports = {
  Gateway, Sandbox, beneficiary, eventually, hasOpenssl, makeCertificates,
  tempDir, uniqueAccount,
};
