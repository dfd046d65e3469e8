#!/usr/bin/env bash
# Runs the Python client's test suite against a real server: installs the package (from this
# folder) and pytest into <repo>/.tools/pyclient (skipped when a stamp of pyproject.toml and
# the sources shows it is up to date), then runs pytest on the installed package — never the
# source tree. LOCKSERVER_BIN defaults to <repo>/target/release/lockserver; a missing binary,
# package or test fails the run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

target=.tools/pyclient
stamp="$target/.lockserver-client-stamp"
export LOCKSERVER_BIN="${LOCKSERVER_BIN:-$root/target/release/lockserver}"
if [ ! -x "$LOCKSERVER_BIN" ]; then
    echo "run-tests.sh: no lockserver binary at $LOCKSERVER_BIN" >&2
    echo "  build it (cargo build --release -p lockserver) or set LOCKSERVER_BIN" >&2
    exit 1
fi

wanted="$( (python3 --version; cat clients/python/pyproject.toml;
            find clients/python/src -type f -not -path '*/__pycache__/*' -print0 | sort -z |
            xargs -0 cat) | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "run-tests.sh: installing lockserver-client and pytest into $target"
    rm -rf "$target"
    python3 -m pip install --quiet --disable-pip-version-check --target "$target" \
        ./clients/python pytest
    echo "$wanted" > "$stamp"
fi

# Tests import the installed package only; conftest.py checks where it came from.
export LOCKSERVER_CLIENT_EXPECT_INSTALLED="$root/$target"
export PYTHONPATH="$root/$target"
export PYTHONDONTWRITEBYTECODE=1
cd clients/python
# -p no:cacheprovider: nothing written into the source tree. The outer timeout bounds a hang.
timeout 600 python3 -m pytest -p no:cacheprovider -q -rfE "$@" tests
