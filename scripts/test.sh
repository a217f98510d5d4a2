#!/bin/sh
# Set up, then type-check mesh/ and run the test suite (unit + integration on loopback). Extra arguments
# go to pytest, e.g. scripts/test.sh -m slow. Exit code 5 (no tests ran) is a failure.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
# Meanwhile, on the core mypy leaves idle: pytest's rewritten test modules written to
# __pycache__ (tests/conftest.py), so that no worker rewrites them all again (7 s of
# CPU each on a fresh clone).
.venv/bin/python -m pytest --collect-only -q -p no:cacheprovider >/dev/null 2>&1 &
warm=$!
trap 'kill "$warm" 2>/dev/null || true' EXIT
echo "test.sh: ruff (lint) and mypy --strict on mesh/"
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy
wait "$warm" || true
set +e
workers="${MESH_TEST_WORKERS:-4}"
# the 20 slowest tests are listed at the end: where the run's time goes (docs/testing.md)
if [ "$workers" = "0" ]; then
    .venv/bin/python -m pytest -m "not slow" --durations=20 "$@"
else
    .venv/bin/python -m pytest -m "not slow" -n "$workers" --durations=20 "$@"
fi
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: failing" >&2
    exit 1
fi
exit "$rc"
