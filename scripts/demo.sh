#!/bin/sh
# Set up, then run a real two-node mesh on this machine (see examples/demo.py).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh --demo
exec .venv/bin/python -m examples.demo
