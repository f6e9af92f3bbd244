"""``dpn node ...``: commands for the company's IT team, run on the node's machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crimmis_dpn.cli._common import console, reported_errors

__all__ = ["node_app"]

node_app = typer.Typer(
    help="Run a company's node: create it, import records, serve DP answers.",
    no_args_is_help=True,
)

Home = Annotated[
    Path,
    typer.Option("--home", envvar="DPN_NODE_HOME", help="node home directory",
                 show_default=True),
]


@node_app.command("init")
def init(
    node_id: Annotated[str, typer.Option("--id", help="node id: lower-case letters, digits, -")],
    name: Annotated[str, typer.Option("--name", help="company display name")],
    home: Home = Path("dpn-node"),
    database_url: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: SQLite in home)"
    )] = None,
    port: Annotated[int, typer.Option(help="port of `dpn node serve`")] = 8701,
) -> None:
    """Create a node: settings, policy file, Ed25519 identity key and database.

    Example: dpn node init --id acme-mining --name "Acme Mining" --home /srv/dpn-node
    """
    from node import init_node

    with reported_errors():
        context = init_node(home=home, node_id=node_id, display_name=name,
                            database_url=database_url, port=port)
    console.print(f"created node [bold]{node_id}[/bold] in {home}")
    console.print(f"  key id (tell the coordinator's operator): [bold]{context.key_id}[/bold]")
    console.print(f"  edit {home / 'policy.toml'}: budget and declared coverage")
    console.print(f"  next: dpn node ingest FILE --mapping MAPPING.toml --home {home}")


@node_app.command("ingest")
def ingest(
    file: Annotated[Path, typer.Argument(help="CSV, XLSX or Parquet file", exists=True,
                                         dir_okay=False)],
    mapping: Annotated[Path, typer.Option("--mapping", help="mapping TOML (see docs/ingest.md)",
                                          exists=True, dir_okay=False)],
    home: Home = Path("dpn-node"),
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Import a file atomically: every row valid, or nothing changes and every bad row is listed.

    Example: dpn node ingest exports/2024.csv --mapping acme-mapping.toml --home /srv/dpn-node
    """
    from node import ingest_file, load_mapping, open_node

    with reported_errors():
        context = open_node(home)
        loaded = load_mapping(mapping)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, disable=as_json) as progress:
            task = progress.add_task(f"importing {file.name}", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            report = ingest_file(engine=context.engine, path=file, mapping=loaded,
                                 progress=advance)
        context.engine.dispose()
    if as_json:
        console.print_json(json.dumps({
            "file": report.file_name, "sha256": report.sha256,
            "rows_imported": report.rows_imported, "already_imported": report.already_imported,
            "import_id": report.import_id,
        }))
    elif report.already_imported:
        console.print(f"{file} was already imported (import {report.import_id}); nothing changed")
    else:
        console.print(f"imported {report.rows_imported:,} records from {file}")


@node_app.command("serve")
def serve(
    home: Home = Path("dpn-node"),
    host: Annotated[str | None, typer.Option(help="bind address (default from settings)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default from settings)")] = None,
) -> None:
    """Serve the node's API (/v1): DP answers to the coordinator, nothing else.

    Example: dpn node serve --home /srv/dpn-node --port 8701
    """
    import uvicorn

    from node import create_app, open_node

    with reported_errors():
        context = open_node(home)
    uvicorn.run(create_app(context), host=host or context.settings.host,
                port=port or context.settings.port, log_level="info")


@node_app.command("status")
def status(
    home: Home = Path("dpn-node"),
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
) -> None:
    """Show the node's identity, privacy budget per year and imported data.

    Example: dpn node status --home /srv/dpn-node
    """
    from node import budget_status, data_summary, open_node

    with reported_errors():
        context = open_node(home)
        budget = budget_status(engine=context.engine,
                               epsilon_per_year=context.policy.budget.epsilon_per_year)
        summary = data_summary(engine=context.engine, coverage=context.policy.coverage)
        context.engine.dispose()
    if as_json:
        console.print_json(json.dumps({
            "node_id": context.settings.node_id, "key_id": context.key_id,
            "budget": [{"year": b.year, "total": b.total, "spent": b.spent,
                        "remaining": b.remaining} for b in budget],
            "records": summary.records, "imports": summary.imports,
            "records_outside_coverage": summary.outside_coverage,
        }))
        return
    console.print(f"node [bold]{context.settings.node_id}[/bold] "
                  f"({context.settings.display_name}), key id {context.key_id}")
    console.print(f"{summary.records:,} records from {summary.imports} import(s); "
                  f"{summary.outside_coverage:,} outside the declared coverage (never released)")
    table = Table(title="privacy budget (pure-DP epsilon per year of data)")
    for column in ("year", "total", "spent", "remaining"):
        table.add_column(column, justify="right")
    for b in budget:
        table.add_row(str(b.year), f"{b.total:g}", f"{b.spent:.4g}", f"{b.remaining:.4g}")
    console.print(table)
