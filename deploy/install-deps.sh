#!/usr/bin/env bash
# Installs every Debian 12 package needed to build, test and run the gateway.
# Idempotent and non-interactive; run as root (or with sudo available).
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates openssl
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libgrpc++-dev libgrpc-dev libabsl-dev
  libcurl4-openssl-dev libssl-dev
  rapidjson-dev
  libgtest-dev libgmock-dev googletest
  libsqlite3-dev sqlite3
  libcpp-httplib-dev libevent-dev
  libspdlog-dev libfmt-dev
  # tcmalloc, the allocator of the gateway and the sandbox (CMakeLists.txt).
  libgoogle-perftools-dev
  python3 python3-grpcio python3-protobuf
  python3-pip python3-setuptools python3-wheel
  # The PostgreSQL ledger (libpq) and the real PostgreSQL its tests start.
  libpq-dev postgresql
  clang-format
  # The reliability suite: fuzzing (clang + libFuzzer + sanitizer runtimes),
  # ledger faults on a small filesystem of their own (mkfs.ext4, losetup).
  clang-14 libfuzzer-14-dev libclang-rt-14-dev
  e2fsprogs util-linux mount
  # The static checks of deploy/ (tests/deploy/check_deploy.py): YAML,
  # systemd-analyze, and docker-compose to validate the compose file.
  python3-yaml systemd docker-compose
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all Debian packages present"
else
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# buf (proto lint) comes from npm, into the repo's own .tools/ (git-ignored).
# Optional: without node/npm the lint test is skipped, everything else runs.
repo=$(cd "$(dirname "$0")/.." && pwd)
buf_version=1.75.0
if command -v npm >/dev/null 2>&1; then
  if [ "$("$repo/.tools/node_modules/.bin/buf" --version 2>/dev/null)" != "$buf_version" ]; then
    echo "install-deps: installing buf $buf_version from npm into .tools/"
    npm install --silent --no-audit --no-fund --prefix "$repo/.tools" \
      "@bufbuild/buf@$buf_version" >/dev/null ||
      echo "install-deps: buf could not be installed; the proto lint test will be skipped"
  fi
else
  echo "install-deps: npm not found; the proto lint test will be skipped"
fi

# The Node client package's dependencies (client/node), for its test.
if command -v npm >/dev/null 2>&1; then
  echo "install-deps: npm ci in client/node"
  (cd "$repo/client/node" && npm ci --no-audit --no-fund --silent) ||
    echo "install-deps: client/node dependencies could not be installed; node_client_package_test will be skipped"
fi

# dockerfile-utils (the Dockerfile linter of the deploy tests) comes from npm
# too, into the same .tools/. Optional: without it that test is skipped.
dockerfile_utils_version=0.16.3
if command -v npm >/dev/null 2>&1; then
  if [ "$(cd "$repo/.tools" 2>/dev/null &&
    node -p "require('dockerfile-utils/package.json').version" 2>/dev/null)" != \
    "$dockerfile_utils_version" ]; then
    echo "install-deps: installing dockerfile-utils $dockerfile_utils_version from npm into .tools/"
    npm install --silent --no-audit --no-fund --prefix "$repo/.tools" \
      "dockerfile-utils@$dockerfile_utils_version" >/dev/null ||
      echo "install-deps: dockerfile-utils could not be installed; the Dockerfile lint test will be skipped"
  fi
fi
