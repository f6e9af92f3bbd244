"""NOT PRIVATE: SDV's GaussianCopula, as a local baseline for evaluation and benchmarks only.

SDV's synthesizers are not differentially private: their fit reads category values, minima
and maxima and exact statistics from the records, and their metadata detection stores them.
Nothing fitted here may leave a node; there is no release path from this module (nodes
release only :func:`synthetic.fit_synthesizer` models).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import pandas as pd
import polars as pl

from synthetic._domain import COLUMNS

__all__ = ["NonPrivateBaseline", "fit_sdv_baseline_not_private"]


@dataclass(frozen=True)
class NonPrivateBaseline:
    """A fitted SDV GaussianCopula (NOT differentially private; never release)."""

    _synthesizer: Any
    private: bool = False

    def sample(self, n: int) -> pl.DataFrame:
        """``n`` rows of :data:`synthetic.COLUMNS` (no constraint enforcement)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning,
                                    module=r"(rdt|sdv|copulas)\..*")
            frame = self._synthesizer.sample(num_rows=n)
        return pl.from_pandas(frame["records"]).select(COLUMNS)


def fit_sdv_baseline_not_private(
    records: pl.DataFrame | pd.DataFrame,
) -> NonPrivateBaseline:
    """Fit SDV 2.0's GaussianCopula on ``records`` (NOT private: local comparison only).

    SDV seeds its own samplers: the same fit samples the same rows in the same order.
    """
    from sdv.metadata import Metadata
    from sdv.single_table import GaussianCopulaSynthesizer

    frame = records if isinstance(records, pl.DataFrame) else pl.from_pandas(records)
    data = frame.select(COLUMNS).to_pandas()
    for col in COLUMNS:
        if col not in ("quantity_t", "price_usd_t"):
            data[col] = data[col].astype(object)
    metadata = Metadata.load_from_dict({
        "tables": {"records": {"columns": {
            c: {"sdtype": "numerical" if c in ("quantity_t", "price_usd_t") else "categorical"}
            for c in COLUMNS
        }}}
    })
    synthesizer = GaussianCopulaSynthesizer(metadata, enforce_min_max_values=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(rdt|sdv|copulas)\..*")
        synthesizer.fit({"records": data})
    return NonPrivateBaseline(synthesizer)
