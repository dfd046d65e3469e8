#!/usr/bin/env bash
# The Node client's tests: installs the dependencies (npm ci, into clients/node/node_modules,
# skipped when they are up to date), builds the package (tsc: dist/esm and dist/cjs), and runs
# the node:test suite against the built package and a real server.
#
# The server binary is LOCKSERVER_BIN, default <repo>/target/release/lockserver. Anything
# missing is an error: nothing is skipped silently.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "run-tests.sh: node and npm are required (Node >= 18; apt-get install nodejs npm)" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  echo "run-tests.sh: the package and its tests need Node >= 18 (this is $(node --version))" >&2
  exit 1
fi

# npm keeps a copy of the lockfile it installed in node_modules/.package-lock.json.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
  || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "run-tests.sh: npm ci" >&2
  npm ci --no-audit --no-fund
fi

node scripts/build.mjs

export LOCKSERVER_BIN="${LOCKSERVER_BIN:-$repo/target/release/lockserver}"
if [ ! -x "$LOCKSERVER_BIN" ]; then
  echo "run-tests.sh: no lockserver binary at $LOCKSERVER_BIN: run \`cargo build --release -p lockserver\` in $repo, or set LOCKSERVER_BIN" >&2
  exit 1
fi

shopt -s nullglob
tests=(test/*.test.mjs test/*.test.cjs)
if [ "${#tests[@]}" -eq 0 ]; then
  echo "run-tests.sh: no test files found in $here/test" >&2
  exit 1
fi
exec node --test "${tests[@]}"
