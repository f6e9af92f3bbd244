"""Benchmarks of the node and coordinator code paths; run them with ``python -m bench``.

``bench._harness`` holds the generic parts (registry, timing, rendering, BENCHMARKS.md); every
other module is one benchmark entry exposing a ``BENCHMARK`` (:class:`bench._harness.Benchmark`),
listed explicitly in ``bench.__main__``.
"""
