'use strict';
// The gateway's API, loaded from its proto files at run time: the package's
// own proto/ (copied there by scripts/copy-protos.js), or $AOPAY_PROTO_DIR,
// or the repository's proto/ when the package is used from a clone.

const fs = require('fs');
const path = require('path');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const API_PROTO = 'aopay/payout/v1/payout.proto';
const RPC_PROTOS = ['google/rpc/status.proto', 'google/rpc/error_details.proto'];

function protoDir() {
  const candidates = [
    process.env.AOPAY_PROTO_DIR,
    path.join(__dirname, '..', 'proto'),
    path.join(__dirname, '..', '..', '..', 'proto'),
  ];
  for (const dir of candidates) {
    if (dir && fs.existsSync(path.join(dir, API_PROTO))) return dir;
  }
  throw new Error(`aopay-payouts: cannot find ${API_PROTO}; run ` +
                  '`npm run prepare` in the package, or set AOPAY_PROTO_DIR');
}

let loaded = null;

function enumNames(definition) {
  return new Set(definition.type.value.map((value) => value.name));
}

// {services: {PayoutService, PayoutAdminService} method definitions by
//  name, enums: {TransferMode, PayoutState} value names, rpc: protobufjs
//  types of google.rpc}
function load() {
  if (loaded) return loaded;
  const dir = protoDir();
  const definition = protoLoader.loadSync(API_PROTO, {
    includeDirs: [dir],
    keepCase: false,  // requestId, amountPaise, ...
    longs: String,    // int64 as decimal strings, as in the JSON mapping
    enums: String,    // 'PAYOUT_STATE_ACCEPTED'
    defaults: true,
    oneofs: true,
  });
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(dir, target);
  root.loadSync(RPC_PROTOS, {keepCase: false});
  loaded = {
    services: {
      PayoutService: definition['aopay.payout.v1.PayoutService'],
      PayoutAdminService: definition['aopay.payout.v1.PayoutAdminService'],
    },
    enums: {
      TransferMode: enumNames(definition['aopay.payout.v1.TransferMode']),
      PayoutState: enumNames(definition['aopay.payout.v1.PayoutState']),
    },
    rpc: {
      Status: root.lookupType('google.rpc.Status'),
      ErrorInfo: root.lookupType('google.rpc.ErrorInfo'),
      BadRequest: root.lookupType('google.rpc.BadRequest'),
      RetryInfo: root.lookupType('google.rpc.RetryInfo'),
    },
  };
  return loaded;
}

module.exports = {load, protoDir};
