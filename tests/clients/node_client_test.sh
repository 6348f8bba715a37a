#!/usr/bin/env bash
# node_client_package_test: the Node package's tests (client/node/test),
# the live ones against PAYOUT_SERVER_BIN and AOPAY_SANDBOX_BIN.
# Exit 77 (skipped) when node, or the package's node_modules (`npm ci` in
# client/node, which deploy/install-deps.sh runs), are missing.
set -euo pipefail
package=$(cd "$(dirname "$0")/../../client/node" && pwd)

if ! command -v node >/dev/null 2>&1; then
  echo "node_client_test: node not found: skipped"
  exit 77
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if ((major < 18)); then
  echo "node_client_test: node $(node --version) is older than 18: skipped"
  exit 77
fi
for module in @grpc/grpc-js @grpc/proto-loader protobufjs; do
  if [[ ! -d $package/node_modules/$module ]]; then
    echo "node_client_test: $package/node_modules lacks $module" \
         "(run npm ci there): skipped"
    exit 77
  fi
done

cd "$package"
# The package's proto/ from the repository's, as npm ci made it.
node scripts/copy-protos.js
exec node --test test/retry.test.js test/watch.test.js test/live.test.js
