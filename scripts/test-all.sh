#!/usr/bin/env bash
# Runs every test of the project, part by part, and prints the time each part took.
# It installs what a fresh machine lacks (cargo-nextest if missing) and starts and stops any
# service a part needs itself. Exit status: non-zero if any part fails.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
export RUST_BACKTRACE=1

summary=()
part() {
    local name=$1 budget_min=$2
    shift 2
    local start=$SECONDS
    echo "=== part: $name (budget ${budget_min} min) ==="
    "$@"
    local took=$((SECONDS - start))
    summary+=("$(printf '%-22s %4ds  (budget %d min)' "$name" "$took" "$budget_min")")
    echo "=== part: $name done in ${took}s ==="
}

ensure_tools() {
    if ! cargo nextest --version >/dev/null 2>&1; then
        cargo install --locked cargo-nextest
    fi
    # The client backends' tests start their own PostgreSQL and Redis servers; they need the
    # Debian packages (the packaged services are stopped: the tests run their own instances).
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    if [ ${#missing[@]} -gt 0 ]; then
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        "${sudo[@]}" apt-get update -qq
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        for service in redis-server postgresql; do
            "${sudo[@]}" service "$service" stop >/dev/null 2>&1 || true
        done
    fi
}

build() {
    cargo build --workspace --all-targets --release
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --release -- -D warnings
}

rust_tests() {
    # Release profile: the core's property tests and the server's integration tests run many
    # thousands of commands; debug builds would spend the budget on unoptimised code.
    cargo nextest run --workspace --release --no-fail-fast
    # The client crate's documentation examples (compiled; the runnable ones run).
    cargo test --doc --release -p lockserver-client --all-features
}

compat_tests() {
    # The published clients of the systems we replace, unchanged, against our server. Their
    # packages go into .tools/ (never vendored); a missing package fails the part.
    if [ ! -f .tools/python/lockserver_client.py ]; then
        python3 -m pip install --quiet --disable-pip-version-check --target .tools/python \
            lockserver-client==0.1.3
    fi
    if [ ! -d .tools/python/rdlmpy ]; then
        # rdlm-py 0.2.0's sdist does not build as published (its setup.py imports the package
        # and reads a file the sdist lacks); pip leaves the unpacked source behind with
        # --no-clean, and its pure-Python package works on PYTHONPATH beside requests.
        local unpack
        unpack=$(mktemp -d)
        TMPDIR=$unpack python3 -m pip download --quiet --disable-pip-version-check --no-deps \
            --no-binary :all: --no-clean -d "$unpack/dist" rdlm-py==0.2.0 >/dev/null 2>&1 || true
        local package
        package=$(find "$unpack" -type d -name rdlmpy | head -1)
        if [ -z "$package" ]; then
            echo "compat: could not fetch rdlm-py 0.2.0 from PyPI" >&2
            rm -rf "$unpack"
            return 1
        fi
        cp -r "$package" .tools/python/
        rm -rf "$unpack"
    fi
    if [ ! -d .tools/node/node_modules/locker ]; then
        mkdir -p .tools/node
        npm install --silent --no-audit --no-fund --prefix .tools/node locker@0.1.0
    fi
    PYTHONPATH=.tools/python python3 tests/compat/test_lockserver_client.py
    PYTHONPATH=.tools/python python3 tests/compat/test_rdlm_client.py
    # The client still uses `new Buffer`: silence Node's deprecation notice, nothing else.
    node --no-deprecation tests/compat/test_locker_client.js
}

client_tests() {
    # Our own Python and Node clients, each against a real server, including the shared
    # conformance scenarios. Each script installs its dependencies into a local folder.
    clients/python/run-tests.sh
    clients/node/run-tests.sh
}

clients_and_compat() {
    compat_tests
    client_tests
}

lockbench_quick() {
    # A smoke run of the benchmark harness (Lockserver and Redis, seconds) so it cannot rot;
    # the figures that count come from full runs (bench/README.md).
    bench/setup.sh --quick
    target/release/lockbench run --quick
}

part tools 2 ensure_tools
part build 10 build
part rust-tests 8 rust_tests
part clients-compat 5 clients_and_compat
part lockbench-quick 2 lockbench_quick

echo
echo "=== time per part ==="
printf '%s\n' "${summary[@]}"
