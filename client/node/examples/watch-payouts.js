#!/usr/bin/env node
// Prints every state change of the gateway's payouts as it happens, and
// goes on across broken connections and gateway restarts. The cursor of
// the last change printed is kept in a file, so that the next run goes on
// from there: nothing is missed, nothing is printed twice.
//
//   node examples/watch-payouts.js 127.0.0.1:50051
//   node examples/watch-payouts.js 127.0.0.1:50051 my.cursor SUCCEEDED FAILED
//   PAYOUT_TOKEN=... node examples/watch-payouts.js localhost:50443 \
//       watch.cursor --ca=ca.crt
//
// Ctrl-C stops it (and stores where it stands).
'use strict';

const fs = require('fs');
const {PayoutClient, PayoutError, stateName} = require('..');

function readCursor(file) {
  try {
    return fs.readFileSync(file, 'utf8').trim() || null;
  } catch (error) {
    if (error.code === 'ENOENT') return null;  // the first run: from now on
    throw error;
  }
}

async function main() {
  const args = process.argv.slice(2);
  const ca = args.find((a) => a.startsWith('--ca='));
  const [target = '127.0.0.1:50051', cursorFile = 'watch.cursor',
    ...states] = args.filter((a) => a !== ca);
  const client = new PayoutClient(target, {
    rootCerts: ca ? ca.slice('--ca='.length) : null,
    token: process.env.PAYOUT_TOKEN || null,
  });
  const watch = client.watchPayouts({
    states,
    afterCursor: readCursor(cursorFile),
    retry: {
      onRetry: (attempt, error, delayMs) => console.error(
          `watch broke (${error}); reconnecting in ${Math.round(delayMs)} ` +
          `ms (attempt ${attempt + 1})`),
    },
  });
  process.once('SIGINT', () => watch.close());
  try {
    for await (const event of watch) {
      const {payout} = event;
      console.log(`${payout.payoutId}: ${stateName(event.previousState)} -> ` +
                  `${stateName(payout.state)} (request ${payout.requestId}, ` +
                  `${payout.amountPaise} paise)`);
      // Store the cursor once the event is handled (here: printed).
      fs.writeFileSync(cursorFile, event.cursor + '\n');
    }
  } catch (error) {
    if (!(error instanceof PayoutError)) throw error;
    console.error(`watch ended: ${error} after ${error.attempts} attempt(s)`);
    if (error.reason === 'CURSOR_EXPIRED') {
      console.error(`events after the stored cursor were deleted: read the ` +
                    `payouts with ListPayouts, then remove ${cursorFile}`);
    }
    process.exitCode = 1;
  } finally {
    // Also before the first event: the watch then stands where its
    // stream started, and the next run goes on from there.
    if (watch.cursor) fs.writeFileSync(cursorFile, watch.cursor + '\n');
    client.close();
  }
}

main();
