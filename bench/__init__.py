"""Benchmarks run on purpose (``python -m bench.<name>``), never as timed tests."""
