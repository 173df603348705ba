"""Benchmarks run by `make bench` (`python -m bench`); results go to docs/benchmarks.md. Not tests."""
