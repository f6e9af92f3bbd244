"""``dpn coordinator report``: post-process saved balances into an HTML report and exports.

Register with ``register_report_commands(coordinator_app)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import BaseModel

from crimmis_dpn.cli._common import ExitCode, console, fail, reported_errors

_Model = TypeVar("_Model", bound=BaseModel)

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
    company_concentration: Annotated[list[Path] | None, typer.Option(
        "--company-concentration",
        help="company HHI cells written by `dpn coordinator company-concentration --output` "
             "(repeatable)")] = None,
    export_dir: Annotated[Path | None, typer.Option(
        help="also write JSON, CSV and Parquet exports with provenance here")] = None,
    draws: Annotated[int, typer.Option(help="bootstrap draws per balance for error bars")] = 400,
) -> None:
    """Write a self-contained HTML report (balances, Sankey, concentration, prices, forecasts).

    Company concentration (HHI by company) comes from secure-aggregation rounds, saved with
    `dpn coordinator company-concentration --output`.

    Reads saved balances: spends no privacy budget.

    Example: dpn coordinator report --balance cobalt-2023.json --balance cobalt-2024.json
    --output cobalt.html --export-dir cobalt-exports
    """
    from coordinator import Balance, PooledResult, build_market_report, export_report
    from crimmis_dpn.cli._report_html import CompanyConcentrationFile, write_report_html

    balances = [_read(Balance, p, "a balance") for p in balance]
    price_results = [_read(PooledResult, p, "a pooled price result") for p in prices or []]
    concentration = [_read(CompanyConcentrationFile, p, "company concentration cells")
                     for p in company_concentration or []]
    with reported_errors():
        result = build_market_report(balances, prices=price_results, draws=draws)
    write_report_html(result, output, company_concentration=concentration)
    console.print(f"wrote {output}")
    if export_dir is not None:
        for path in export_report(result, directory=export_dir):
            console.print(f"wrote {path}")


def _read(model: type[_Model], path: Path, what: str) -> _Model:
    """``path`` parsed as ``model``; else exit 2 naming the file, the field and why."""
    from pydantic import ValidationError

    from protocols import describe_validation_error

    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(f"{path}: cannot read it: {exc.strerror or exc}", ExitCode.USAGE) from None
    except ValidationError as exc:
        raise fail(f"{path} is not {what}: {describe_validation_error(exc)}", ExitCode.USAGE,
                   "pass the JSON that the matching `dpn coordinator` command wrote with "
                   "--output") from None


def register_report_commands(app: typer.Typer) -> None:
    """Add ``report`` to the ``dpn coordinator`` command group."""
    app.command("report")(report)
