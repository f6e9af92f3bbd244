"""The demo: sample data of fictitious companies for a whole pool on loopback."""

from crimmis_dpn.demo._sample_data import (
    ReferenceFigure,
    SampleCompany,
    reference_figures,
    write_sample_data,
)

__all__ = ["ReferenceFigure", "SampleCompany", "reference_figures", "write_sample_data"]
