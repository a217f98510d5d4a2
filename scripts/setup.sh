#!/bin/sh
# Create .venv (once) and install mesh with its test tools into it. Idempotent.
# pip's output goes to .venv/setup.log and is shown only when something fails.
# `setup.sh --demo` (scripts/demo.sh): mesh alone, no test tools, no system packages.
set -eu
extras="[test]"
demo=""
if [ "${1:-}" = "--demo" ]; then extras=""; demo=1; fi
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version 2>&1)"
    "$PY" -m venv .venv
fi
log=.venv/setup.log

# System tools for the cluster tests (tests/cluster: hosts in network namespaces, root only):
# ip (iproute2) and iptables. Installed only when running as root with apt-get and missing;
# otherwise skipped silently (the cluster tests then skip with a reason).
need=""
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have ip || need="$need iproute2"
have iptables || need="$need iptables"
# Debian's chromium and its driver for the dashboard's browser test (tests/integration/
# test_e2e_web_browser.py drives them with selenium; it skips with a reason without them)
have chromium || need="$need chromium"
have chromedriver || need="$need chromium-driver"
if [ -z "$demo" ] && [ -n "$need" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing$need (apt-get) for the cluster and browser tests"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends $need; } >.venv/apt.log 2>&1; then
        echo "setup: apt-get install$need failed (cluster/browser tests will skip); log in .venv/apt.log" >&2
    fi
fi
if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
       .venv/bin/python -m pip install --disable-pip-version-check -e ".$extras"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: pip install failed (log above, also in $log)" >&2
    exit 1
fi
# Bytecode for the tree, written once here: the test suite starts a thousand Python
# processes (nodes, meshctl, apps), and where PYTHONDONTWRITEBYTECODE is set (as in CI
# sandboxes) each compiled every module of mesh again (a third of the CPU of
# tests/integration/test_e2e_keys.py and test_e2e_cli.py: 52 s of user CPU vs 34).
# Python checks each file's size and mtime against its .pyc, so an edit is never stale.
if ! .venv/bin/python -m compileall -q mesh tests examples bench >"$log.pyc" 2>&1; then
    cat "$log.pyc" >&2
    echo "setup: compileall found files that do not compile (above)" >&2
fi
echo "setup: mesh installed in .venv ($(.venv/bin/python -c 'import mesh; print(mesh.__version__)'))"
