#!/usr/bin/env node
// Sends one payout through the gateway and prints what became of it.
//
//   node examples/send-payout.js 127.0.0.1:50051
//   PAYOUT_TOKEN=... node examples/send-payout.js localhost:50443 ca.crt
//
// Against a gateway on the built-in sandbox no money moves.
'use strict';

const {PayoutClient, PayoutError, newRequestId, stateName} = require('..');

async function main() {
  const [target = '127.0.0.1:50051', ca] = process.argv.slice(2);
  const client = new PayoutClient(target, {
    rootCerts: ca || null,
    token: process.env.PAYOUT_TOKEN || null,
    retry: {
      onRetry: (attempt, error, delayMs) => console.error(
          `attempt ${attempt} failed (${error}); retrying in ${delayMs} ms`),
    },
  });
  // Store the request id with your own record of the payment before
  // sending, so that a crash of this program can be retried with it.
  const requestId = newRequestId();
  console.log('request id:', requestId);
  try {
    const payout = await client.createPayout({
      requestId,
      beneficiary: {accountNumber: '100000011836', ifsc: 'SBIN0000002',
        name: 'Dean Jon', email: 'abc@gmail.com', mobile: '9959640000'},
      amountPaise: 1234,
      mode: 'IMPS',
    });
    console.log(`payout ${payout.payoutId}: ${stateName(payout.state)}, ` +
                `AOPay transaction ${payout.transactionId || '-'}`);
  } catch (error) {
    if (!(error instanceof PayoutError)) throw error;
    console.error('payout failed:', String(error));
    if (error.outcomeUnknown) {
      console.error(`AOPay may have the payout (${error.payoutId}). Do not ` +
                    'send it again under a new request id: refresh it, or ' +
                    'have an operator resolve it.');
    }
    process.exitCode = 1;
  } finally {
    client.close();
  }
}

main();
