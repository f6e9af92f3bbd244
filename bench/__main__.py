"""``python -m bench``: run the benchmark entries listed below (in this order).

To add an entry, write a module ``bench/<name>.py`` exposing ``BENCHMARK`` (a
:class:`bench._harness.Benchmark`) and append it to :data:`BENCHMARKS`.
"""

from __future__ import annotations

import sys

from bench import (
    consistency,
    dp_groupby,
    ledger,
    pull_latency,
    secure_aggregation,
    synthetic_data,
)
from bench._harness import Benchmark, main

BENCHMARKS: list[Benchmark] = [
    dp_groupby.BENCHMARK,
    consistency.BENCHMARK,
    synthetic_data.BENCHMARK,
    pull_latency.BENCHMARK,
    secure_aggregation.BENCHMARK,
    ledger.BENCHMARK,
]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], BENCHMARKS))
