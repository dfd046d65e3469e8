#!/usr/bin/env bash
# Installs the systems lockbench compares Lockserver with, from their usual sources (never
# vendored): Redis, etcd and PostgreSQL from Debian, the original Lockserver (crate lockserver
# 0.1.3) from crates.io and the original locker (npm locker-server 0.1.3) into .tools/.
# Idempotent: installs only what is missing.
#   bench/setup.sh          everything
#   bench/setup.sh --quick  only what `lockbench run --quick` needs (Redis)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
[ "${1:-}" = "--quick" ] && quick=true

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ! $quick; then
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } \
        || missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian starts the packaged services; lockbench runs its own instances on free ports.
for service in redis-server etcd postgresql; do
    if command -v service >/dev/null 2>&1; then
        sudo_if_needed service "$service" stop >/dev/null 2>&1 || true
    fi
done

if ! $quick && [ ! -d .tools/node/node_modules/locker-server ]; then
    echo "setup: installing the original locker (npm locker-server 0.1.3) into .tools/node"
    mkdir -p .tools/node
    npm install --silent --no-audit --no-fund --prefix .tools/node locker-server@0.1.3
fi
if ! $quick && [ ! -x .tools/bin/lockserver ]; then
    echo "setup: installing the original Lockserver (crate lockserver 0.1.3) into .tools"
    cargo install lockserver --version 0.1.3 --root .tools
fi
echo "setup: ready"
