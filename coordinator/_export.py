"""Exports of a :class:`MarketReport`: JSON, and CSV and Parquet tables, with provenance.

Files written by :func:`export_report` into a directory:

* ``report.json``: the whole report (balances with provenance, indicators, flags, ...);
* ``figures.{csv,parquet}``: every figure of every post-processed balance, long format;
* ``indicators.{csv,parquet}``: every indicator value (volume-weighted and mean prices,
  price volatility, long-term share, supply risk; notes say when reference data are
  ILLUSTRATIVE);
* ``provenance.{csv,parquet}``: per balance, each query id and each node with its status and
  the epsilon it spent per accounting year.

Parquet files also carry the provenance as JSON in their schema metadata
(key ``crimmis_dpn.provenance``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from coordinator._market_models import FIGURES, MarketReport

__all__ = ["EXPORT_FORMATS", "export_report", "report_tables"]

EXPORT_FORMATS = ("json", "csv", "parquet")


def report_tables(report: MarketReport) -> dict[str, list[dict[str, Any]]]:
    """The report's flat tables (``figures``, ``indicators``, ``provenance``)."""
    figures = []
    provenance = []
    for b in report.balances:
        for row in b.rows:
            for name in FIGURES:
                f = row.figure(name)
                figures.append({
                    "commodity": str(b.commodity), "period": b.period, "level": str(row.level),
                    "area": row.area, "stage": row.stage, "figure": name,
                    "status": str(f.status), "value": f.value, "std": f.std, "ci95": f.ci95,
                    "raw_value": f.raw_value, "missing_members": ";".join(f.missing_members),
                    "measured": f.measured, "unit": b.unit,
                })
        p = b.provenance
        for outcome in p.nodes:
            spent = p.epsilon_by_node.get(outcome.node_id, {}) or {"": 0.0}
            for year, eps in sorted(spent.items()):
                provenance.append({
                    "commodity": str(b.commodity), "period": b.period,
                    "query_ids": ";".join(p.query_ids), "node_id": outcome.node_id,
                    "node_status": str(outcome.status), "accounting_year": year,
                    "epsilon": eps if year else None,
                })
    indicators = [
        {"name": i.name, "commodity": str(i.commodity), "period": i.period, "scope": i.scope,
         "value": i.value, "raw_value": i.raw_value, "std": i.std, "note": i.note}
        for i in [*report.indicators, *report.prices]
    ]
    return {"figures": figures, "indicators": indicators, "provenance": provenance}


def _provenance_json(report: MarketReport) -> str:
    return json.dumps([
        {"commodity": str(b.commodity), "period": b.period,
         **b.provenance.model_dump(mode="json")} for b in report.balances
    ], sort_keys=True)


def export_report(report: MarketReport, *, directory: Path,
                  formats: tuple[str, ...] = EXPORT_FORMATS) -> list[Path]:
    """Write the report's exports into ``directory`` (created); returns the files written."""
    unknown = set(formats) - set(EXPORT_FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s): {', '.join(sorted(unknown))}")
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "json" in formats:
        path = directory / "report.json"
        path.write_text(report.model_dump_json(indent=2), encoding="utf-8")
        written.append(path)
    tables = report_tables(report)
    for name, rows in tables.items():
        if "csv" in formats:
            path = directory / f"{name}.csv"
            with path.open("w", newline="", encoding="utf-8") as handle:
                fields = list(rows[0]) if rows else ["empty"]
                writer = csv.DictWriter(handle, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
            written.append(path)
        if "parquet" in formats:
            path = directory / f"{name}.parquet"
            table = pa.Table.from_pylist(rows) if rows else pa.table({"empty": pa.array([])})
            table = table.replace_schema_metadata(
                {b"crimmis_dpn.provenance": _provenance_json(report).encode("utf-8")})
            pq.write_table(table, path)
            written.append(path)
    return written
