"""The ``dpn`` command: ``dpn node``, ``dpn coordinator``, ``dpn audit``, ``dpn demo``.

Exit codes: 0 ok, 1 unexpected error, 2 bad arguments, 3 configuration (home, settings,
policy, mapping), 4 refused (bad input file, policy, privacy budget, failed query), 5 a service
unreachable, 6 a pooled query still running after the wait, 7 an audit found problems (see
docs/cli.md and
:class:`~crimmis_dpn.cli._common.ExitCode`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crimmis_dpn.cli._audit import audit_app
from crimmis_dpn.cli._common import ExitCode, console, fail
from crimmis_dpn.cli._coordinator import coordinator_app
from crimmis_dpn.cli._node import node_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="dpn",
    help="crimmis-dpn: pooled critical-minerals market data with differential privacy.\n\n"
         "Exit codes: 0 ok, 1 error, 2 usage, 3 configuration, 4 refused, 5 unreachable, "
         "6 still running, 7 audit found problems (docs/cli.md).\n\n"
         "Example: dpn node status --home /srv/dpn-node",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(node_app, name="node")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(audit_app, name="audit")


@app.command("demo")
def demo(
    workdir: Annotated[Path, typer.Option(
        help="where the demo's nodes, logs and results go")] = Path("demo-output"),
    year: Annotated[int, typer.Option(help="balance year")] = 2024,
    epsilon: Annotated[float, typer.Option(
        help="epsilon each node spends per balance (2/3 on flows, 1/3 on stocks)")] = 3.0,
) -> None:
    """Start a coordinator and nine company nodes on loopback, pool cobalt and lithium balances.

    Generates sample data for fictitious companies, imports it into each node, starts every
    service as its own process, enrols the nodes, prints the balances and the budget each
    node spent, writes them to WORKDIR/balances-YEAR.json, and stops every process.

    Example: dpn demo --workdir /tmp/dpn-demo
    """
    from crimmis_dpn.demo import DemoError, run_demo

    try:
        run_demo(workdir=workdir, year=year, epsilon=epsilon, console=console)
    except DemoError as exc:
        raise fail(str(exc), ExitCode.ERROR) from None


def main() -> None:
    """Entry point of the ``dpn`` console script."""
    app()
