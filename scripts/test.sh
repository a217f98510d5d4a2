#!/bin/sh
# Set up, then type-check mesh/ and run the test suite (unit + integration on loopback). Extra arguments
# go to pytest, e.g. scripts/test.sh -m slow. Exit code 5 (no tests ran) is a failure.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
echo "test.sh: ruff (lint) and mypy --strict on mesh/"
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
set +e
workers="${MESH_TEST_WORKERS:-4}"
if [ "$workers" = "0" ]; then
    .venv/bin/python -m pytest -m "not slow" "$@"
else
    .venv/bin/python -m pytest -m "not slow" -n "$workers" "$@"
fi
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: failing" >&2
    exit 1
fi
exit "$rc"
