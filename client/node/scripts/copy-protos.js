#!/usr/bin/env node
// Copies the gateway's proto files into this package's proto/ (npm runs it
// on install from a clone, on `npm ci` and on `npm pack`), so that the
// package carries the API it was installed with. The source is
// $AOPAY_PROTO_DIR, else the repository's proto/ two levels up. Installed
// from a tarball, the package already has its proto/ and the repository is
// not there: nothing is copied then.
'use strict';

const fs = require('fs');
const path = require('path');

const FILES = [
  'aopay/payout/v1/payout.proto',
  'google/rpc/code.proto',
  'google/rpc/status.proto',
  'google/rpc/error_details.proto',
];

const packageDir = path.resolve(__dirname, '..');
const target = path.join(packageDir, 'proto');
const source = process.env.AOPAY_PROTO_DIR ||
    path.join(packageDir, '..', '..', 'proto');

if (!fs.existsSync(path.join(source, FILES[0]))) {
  if (fs.existsSync(path.join(target, FILES[0]))) process.exit(0);
  console.error(`aopay-payouts: no ${FILES[0]} under ${source}; ` +
                'set AOPAY_PROTO_DIR to the repository\'s proto/ directory');
  process.exit(1);
}
for (const file of FILES) {
  const to = path.join(target, file);
  fs.mkdirSync(path.dirname(to), {recursive: true});
  fs.copyFileSync(path.join(source, file), to);
}
