#!/usr/bin/env bash
#  make-test.sh — `make test-typescript`: installs the package's npm
#  dependencies (npm ci, from package-lock.json), compiles with tsc and runs
#  the tests (node --test) against the tree's faissproxyd. First checks that
#  the committed src/protocol.generated.ts matches protocol/.
#  Usage: clients/typescript/scripts/make-test.sh BUILD_DIR
#
#  Offline: an installed node_modules no older than package-lock.json is
#  used as it is; without one, npm must reach its registry (or its cache).
#  When it cannot, this fails with the reason: a skipped test never passes.
set -euo pipefail

build=$(cd "${1:?usage: make-test.sh BUILD_DIR}" && pwd)
cd "$(dirname "$0")/.."

die () { echo "test-typescript: FAILED: $*" >&2; exit 1; }

command -v node >/dev/null || die "node not found (scripts/deps.sh installs Debian's nodejs)"
command -v npm >/dev/null || die "npm not found (scripts/deps.sh installs Debian's npm)"

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "test-typescript: npm ci"
    npm ci --no-audit --no-fund --prefer-offline \
        || die "npm ci failed: the npm registry (or a cache holding package-lock.json's packages) is needed to install clients/typescript/node_modules"
fi
#  Before the build regenerates it: the committed file must match protocol/.
node scripts/gen-protocol.mjs --check \
    || die "src/protocol.generated.ts is stale: run 'npm run generate' in clients/typescript and commit it"
npm run --silent build || die "tsc build failed"
FPX_DAEMON="$build/bin/faissproxyd" FAISS_PROXY_LIB="$build/lib/libfaissproxy.so" \
    npm test || die "node --test failed"
