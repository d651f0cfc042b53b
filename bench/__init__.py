"""Benchmarks: ``python -m bench.run`` (the whole table) and ``python -m bench.decode``."""
