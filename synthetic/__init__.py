"""DP synthetic datasets and their evaluation (depends on :mod:`protocols` only).

Synthetic releases are not implemented yet: nodes release DP aggregates only.
"""

__all__: list[str] = []
