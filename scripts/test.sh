#!/bin/sh
# Set up, then type-check mesh/ and run the test suite (unit + integration on loopback). Extra arguments
# go to pytest, e.g. scripts/test.sh -m slow. Exit code 5 (no tests ran) is a failure.
# mypy runs beside the tests (its result is said, and counted, once they end): on a fresh
# clone it has no cache and took 10 to 30 s of wall time before the first test, while the
# run mostly waits on its nodes (docs/testing.md, "Where a default run's time goes").
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
# Meanwhile, on the core ruff leaves idle: pytest's rewritten test modules written to
# __pycache__ (tests/conftest.py), so that no worker rewrites them all again (7 s of
# CPU each on a fresh clone).
.venv/bin/python -m pytest --collect-only -q -p no:cacheprovider >/dev/null 2>&1 &
warm=$!
mypy_out=$(mktemp)
mypy=""
trap 'kill $warm $mypy 2>/dev/null || true; rm -f "$mypy_out"' EXIT
.venv/bin/python -m mypy >"$mypy_out" 2>&1 &
mypy=$!
echo "test.sh: ruff (lint); mypy --strict on mesh/ runs beside the tests (said at the end)"
.venv/bin/python -m ruff check .
wait "$warm" || true
set +e
# 6 xdist workers on the 2 cores CI has: the run mostly waits on its nodes (4 left the
# cores ~45 % idle; docs/testing.md, "Where a default run's time goes")
workers="${MESH_TEST_WORKERS:-6}"
# the 20 slowest tests are listed at the end: where the run's time goes (docs/testing.md)
if [ "$workers" = "0" ]; then
    .venv/bin/python -m pytest -m "not slow" --durations=20 "$@"
else
    .venv/bin/python -m pytest -m "not slow" -n "$workers" --durations=20 "$@"
fi
rc=$?
wait "$mypy"
mypy_rc=$?
mypy=""
echo "test.sh: mypy --strict on mesh/:"
cat "$mypy_out"
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests: failing" >&2
    exit 1
fi
if [ "$mypy_rc" -ne 0 ]; then
    echo "test.sh: mypy failed (above)" >&2
    [ "$rc" -ne 0 ] || rc=1
fi
exit "$rc"
