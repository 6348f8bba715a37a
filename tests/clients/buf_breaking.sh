#!/usr/bin/env bash
# proto_buf_breaking: `buf breaking` of the API in proto/ against the copy
# of the last released API in proto/released/ (proto/released/README.md).
# buf's default rules (FILE): a client built from the released files must
# still build and talk to the gateway. Exit 77 (skipped) without buf.
#
# buf: $BUF, else .tools/node_modules/.bin/buf (deploy/install-deps.sh puts
# it there), else buf on PATH.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)

buf=${BUF:-$repo/.tools/node_modules/.bin/buf}
[[ -x $buf ]] || buf=$(command -v buf || true)
if [[ -z $buf ]]; then
  echo "buf_breaking: buf not found (deploy/install-deps.sh installs it): skipped"
  exit 77
fi

# buf compares against a module outside the one it checks: proto/released
# lies inside proto/'s module (excluded from it), so it is compared as a
# copy of its own.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/released"
cp -r "$repo/proto/released/aopay" "$repo/proto/released/google" "$tmp/released/"

cd "$repo/proto"
if "$buf" breaking . --against "$tmp/released"; then
  echo "buf_breaking: proto/ is compatible with proto/released/"
else
  status=$?
  echo "buf_breaking: proto/ breaks clients of proto/released/ (above);" \
       "keep the released numbers and names, or release a new API version"
  exit "$status"
fi
