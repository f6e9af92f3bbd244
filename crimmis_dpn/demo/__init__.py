"""The demo: sample data of fictitious companies and a whole pool on loopback (``dpn demo``)."""

from crimmis_dpn.demo._run import DemoError, DemoResult, run_demo
from crimmis_dpn.demo._sample_data import (
    ReferenceFigure,
    SampleCompany,
    reference_figures,
    write_sample_data,
)

__all__ = [
    "DemoError",
    "DemoResult",
    "ReferenceFigure",
    "SampleCompany",
    "reference_figures",
    "run_demo",
    "write_sample_data",
]
