"""Benchmarks of rft-operator against the tools users pick today; `python -m bench` runs them all."""
