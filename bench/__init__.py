"""Benchmarks with targets (`make bench` / `python -m bench`); kept out of the test suite on purpose."""
