#!/bin/sh
# Create .venv (once) and install mesh with its test tools into it. Idempotent.
# pip's output goes to .venv/setup.log and is shown only when something fails.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version 2>&1)"
    "$PY" -m venv .venv
fi
log=.venv/setup.log
if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
       .venv/bin/python -m pip install --disable-pip-version-check -e '.[test]'; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: pip install failed (log above, also in $log)" >&2
    exit 1
fi
echo "setup: mesh installed in .venv ($(.venv/bin/python -c 'import mesh; print(mesh.__version__)'))"
