"""``dpn coordinator report``: post-process saved balances into an HTML report and exports.

Register with ``register_report_commands(coordinator_app)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crimmis_dpn.cli._common import console, reported_errors

__all__ = ["register_report_commands", "report"]


def report(
    balance: Annotated[list[Path], typer.Option(
        "--balance", help="a balance JSON written by `dpn coordinator balance --output` "
                          "(repeatable: several years and commodities)")],
    output: Annotated[Path, typer.Option(help="the HTML report to write")] = Path(
        "dpn-report.html"),
    prices: Annotated[list[Path] | None, typer.Option(
        "--prices", help="a pooled result JSON of a monthly mean price query (repeatable)")
    ] = None,
    export_dir: Annotated[Path | None, typer.Option(
        help="also write JSON, CSV and Parquet exports with provenance here")] = None,
    draws: Annotated[int, typer.Option(help="bootstrap draws per balance for error bars")] = 400,
) -> None:
    """Write a self-contained HTML report (balances, Sankey, concentration, prices, forecasts).

    Reads saved balances: spends no privacy budget.

    Example: dpn coordinator report --balance cobalt-2023.json --balance cobalt-2024.json
    --output cobalt.html --export-dir cobalt-exports
    """
    from coordinator import Balance, PooledResult, build_market_report, export_report
    from crimmis_dpn.cli._report_html import write_report_html

    with reported_errors():
        balances = [Balance.model_validate_json(p.read_text(encoding="utf-8")) for p in balance]
        price_results = [PooledResult.model_validate_json(p.read_text(encoding="utf-8"))
                         for p in prices or []]
        result = build_market_report(balances, prices=price_results, draws=draws)
    write_report_html(result, output)
    console.print(f"wrote {output}")
    if export_dir is not None:
        for path in export_report(result, directory=export_dir):
            console.print(f"wrote {path}")


def register_report_commands(app: typer.Typer) -> None:
    """Add ``report`` to the ``dpn coordinator`` command group."""
    app.command("report")(report)
