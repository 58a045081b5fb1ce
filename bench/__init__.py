"""Benchmarks of the txwatch pipeline (``python -m bench.throughput``)."""
