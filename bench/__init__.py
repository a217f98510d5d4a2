"""Benchmarks for mesh: see bench/README.md. Run with ``python -m bench.run``."""
