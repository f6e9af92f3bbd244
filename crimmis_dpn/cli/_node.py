"""``dpn node ...``: commands for the company's IT team, run on the node's machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crimmis_dpn.cli import _common
from crimmis_dpn.cli._common import ExitCode, console, fail, reported_errors
from crimmis_dpn.cli._progress import progress_enabled

__all__ = ["node_app"]

node_app = typer.Typer(
    help="Run a company's node: create it, import records, serve DP answers.\n\n"
         "Example: dpn node ingest exports/2024.csv --mapping acme-mapping.toml --home "
         "/srv/dpn-node",
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

    Every attempt, refused or not, is recorded: see `dpn node imports`. On a terminal, stderr
    shows a progress bar (rows checked, then stored).

    Example: dpn node ingest exports/2024.csv --mapping acme-mapping.toml --home /srv/dpn-node
    """
    from node import ingest_file, load_mapping, open_node

    with reported_errors():
        context = open_node(home)
        loaded = load_mapping(mapping)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=_common.err_console,
                      disable=not progress_enabled(as_json)) as progress:
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


@node_app.command("imports")
def imports(
    home: Home = Path("dpn-node"),
    limit: Annotated[int, typer.Option(help="how many attempts, newest first", min=1)] = 20,
    outcome: Annotated[str | None, typer.Option(
        help="only attempts with this outcome: imported, rejected, duplicate or failed")
    ] = None,
    errors: Annotated[int, typer.Option(
        help="problems shown per refused or failed attempt (0: none; --json has all kept)",
        min=0)] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
) -> None:
    """Show the ingest history: every file imported or refused, with the problems found.

    Refused imports changed nothing, but their problems (file, row, field, reason; the first
    100) are kept here so the data team can fix the file later.

    Example: dpn node imports --home /srv/dpn-node --outcome rejected
    """
    from node import open_node
    from node._ingest_log import OUTCOMES, list_attempts

    if outcome is not None and outcome not in OUTCOMES:
        raise fail(f"unknown outcome {outcome!r} (allowed: {', '.join(OUTCOMES)})",
                   ExitCode.USAGE)
    with reported_errors():
        context = open_node(home)
        attempts = list_attempts(engine=context.engine, limit=limit, outcome=outcome)
        context.engine.dispose()
    if as_json:
        console.print_json(json.dumps([a.to_json() for a in attempts]))
        return
    table = Table(title="ingest attempts, newest first (--json: hashes and every problem kept)")
    for column in ("#", "started (UTC)", "file", "outcome", "rows", "problems", "import"):
        table.add_column(column, justify="right" if column in ("#", "rows", "problems")
                         else "left", no_wrap=column in ("#", "started (UTC)", "outcome"))
    styles = {"imported": "green", "duplicate": "dim", "rejected": "red", "failed": "red"}
    for a in attempts:
        table.add_row(str(a.id), f"{a.started_at:%Y-%m-%d %H:%M}", a.file_name,
                      f"[{styles[a.outcome]}]{a.outcome}[/]" if a.outcome in styles
                      else a.outcome, f"{a.row_count:,}", f"{a.error_count:,}",
                      "" if a.import_id is None else str(a.import_id))
    console.print(table)
    if not attempts:
        console.print("no import attempt yet" if outcome is None
                      else f"no {outcome} import attempt")
        return
    for a in attempts:
        if not errors or not a.errors:
            continue
        console.print(f"[bold]#{a.id} {a.file_name}[/bold]: {a.error_count:,} problem(s)",
                      highlight=False)
        for problem in a.errors[:errors]:
            console.print(f"  {problem}", highlight=False, markup=False)
        shown = min(errors, len(a.errors))
        if a.error_count > shown:
            hint = ("--errors N or --json shows more" if shown < len(a.errors)
                    else f"only the first {len(a.errors)} are kept")
            console.print(f"  ... and {a.error_count - shown:,} more ({hint})",
                          highlight=False)


@node_app.command("serve")
def serve(
    home: Home = Path("dpn-node"),
    host: Annotated[str | None, typer.Option(help="bind address (default from settings)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default from settings)")] = None,
) -> None:
    """Run the node: its pull agent (outbound to the coordinator) and its local API.

    Once enrolled, the node polls the coordinator for jobs over outbound HTTPS; the local API
    (health, identity, budget) binds to 127.0.0.1 by default and needs no inbound firewall
    opening.

    Example: dpn node serve --home /srv/dpn-node
    """
    import logging

    import uvicorn

    from node import create_app, create_schema, load_enrolment, open_node

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    with reported_errors():
        context = open_node(home)
        create_schema(engine=context.engine)  # migrate an upgraded node before serving
        enrolment = load_enrolment(home)
    if enrolment is None:
        console.print("[yellow]not enrolled: serving the local API only; enrol with "
                      "`dpn node enrol --coordinator URL --token TOKEN`[/yellow]")
    settings = context.settings
    uvicorn.run(create_app(context), host=host or settings.host, port=port or settings.port,
                log_level="info", ssl_certfile=settings.tls_cert_file,
                ssl_keyfile=settings.tls_key_file)


@node_app.command("enrol")
def enrol_command(
    coordinator: Annotated[str, typer.Option("--coordinator", help="coordinator base URL")],
    token: Annotated[str, typer.Option("--token", envvar="DPN_ENROLMENT_TOKEN",
                                       help="one-time enrolment token from the operator")],
    coordinator_key_id: Annotated[str | None, typer.Option(
        help="the coordinator key fingerprint the operator gave you; refused on mismatch")
    ] = None,
    home: Home = Path("dpn-node"),
) -> None:
    """Join a pool: register this node's key with a one-time token, pin the coordinator's key.

    Example: dpn node enrol --coordinator https://pool.example --token TOKEN
    --coordinator-key-id 1a2b3c4d5e6f7a8b
    """
    from node import enrol, open_node

    with reported_errors():
        context = open_node(home)
        enrolment = enrol(context=context, coordinator_url=coordinator, token=token,
                          expected_coordinator_key_id=coordinator_key_id)
        context.engine.dispose()
    console.print(f"enrolled with {enrolment.coordinator_url}; pinned coordinator key id "
                  f"[bold]{enrolment.coordinator_key_id}[/bold]")
    console.print(f"  next: dpn node serve --home {home}")


@node_app.command("requests")
def requests(
    home: Home = Path("dpn-node"),
    show_all: Annotated[bool, typer.Option("--all", help="all jobs, not only pending")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
) -> None:
    """List jobs held for approval, with their purpose and privacy cost.

    Example: dpn node requests --home /srv/dpn-node
    """
    from node import list_jobs, open_node
    from protocols import JobState

    with reported_errors():
        context = open_node(home)
        rows = list_jobs(engine=context.engine,
                         states=None if show_all else [JobState.AWAITING_APPROVAL])
        context.engine.dispose()
    if as_json:
        console.print_json(json.dumps([{
            "job_id": r.job_id, "state": r.state, "purpose": r.purpose, "tier": r.tier,
            "requester": r.requester, "kind": r.kind, "epsilon": r.epsilon,
            "years": r.years, "received_at": r.received_at.isoformat(),
            "outcome": r.outcome_message} for r in rows]))
        return
    table = Table(title="jobs awaiting approval" if not show_all else "jobs")
    for column in ("job", "state", "purpose", "tier", "kind", "epsilon per year", "years"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.job_id, r.state, r.purpose, r.tier, r.kind, f"{r.epsilon:g}", r.years)
    console.print(table)
    if not rows:
        console.print("no job is waiting for approval" if not show_all else "no job yet")


@node_app.command("approve")
def approve(
    job_id: Annotated[str, typer.Argument(help="job id from `dpn node requests`")],
    home: Home = Path("dpn-node"),
    by: Annotated[str, typer.Option(help="who approves (recorded)")] = "node owner",
) -> None:
    """Approve a held job: the running node answers it (charged to the budget).

    Example: dpn node approve 3f2a... --by "J. Smith"
    """
    from node import approve_job, open_node

    with reported_errors():
        context = open_node(home)
        row = approve_job(engine=context.engine, job_id=job_id, by=by)
        context.engine.dispose()
    console.print(f"approved job {row.job_id} (epsilon {row.epsilon:g} per year {row.years}); "
                  "the node answers it at its next turn")


@node_app.command("deny")
def deny(
    job_id: Annotated[str, typer.Argument(help="job id from `dpn node requests`")],
    reason: Annotated[str, typer.Option(help="why (sent to the coordinator)")],
    home: Home = Path("dpn-node"),
    by: Annotated[str, typer.Option(help="who denies (recorded)")] = "node owner",
) -> None:
    """Deny a held job: the coordinator is told it is refused, with the reason.

    Example: dpn node deny 3f2a... --reason "purpose not covered by our agreement"
    """
    from node import deny_job, open_node

    with reported_errors():
        context = open_node(home)
        row = deny_job(engine=context.engine, job_id=job_id, by=by, reason=reason)
        context.engine.dispose()
    console.print(f"denied job {row.job_id}")


@node_app.command("rotate-key")
def rotate(home: Home = Path("dpn-node")) -> None:
    """Replace the node's identity key at the coordinator and on disk.

    Example: dpn node rotate-key --home /srv/dpn-node
    """
    from node import open_node, rotate_key

    with reported_errors():
        context = open_node(home)
        new_id = rotate_key(context=context)
        context.engine.dispose()
    console.print(f"new key id [bold]{new_id}[/bold]; restart `dpn node serve` to use it")
    console.print("The other nodes pinned your old key for secure aggregation; they follow "
                  "this rotation (signed by the old key) at the next secure round.")


@node_app.command("peers")
def peers(
    home: Home = Path("dpn-node"),
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
) -> None:
    """List the other nodes' identity keys pinned here for secure aggregation.

    A key is pinned the first time a secure round names the peer (or by `dpn node
    trust-peer`); a round naming a different key for a pinned peer is refused. Compare the key
    ids with the ones the companies publish.

    Example: dpn node peers --home /srv/dpn-node
    """
    from node import open_node, pinned_peer_keys

    with reported_errors():
        open_node(home).engine.dispose()  # a node home, or a clear error
        pins = pinned_peer_keys(home=home)
    if as_json:
        console.print_json(json.dumps({n: p.model_dump(mode="json") for n, p in pins.items()}))
        return
    table = Table(title="peers' identity keys pinned at this node")
    for column in ("node", "key id", "pinned", "by"):
        table.add_column(column)
    for node_id, pin in pins.items():
        table.add_row(node_id, pin.key_id, pin.pinned_at.isoformat(timespec="seconds"),
                      {"first_use": "first secure round", "operator": "operator",
                       "rotation": "rotation signed by the pinned key"}[pin.source])
    console.print(table)
    if not pins:
        console.print("no peer pinned yet: keys are pinned at the first secure round")


@node_app.command("trust-peer")
def trust_peer_command(
    node_id: Annotated[str, typer.Argument(help="the peer's node id")],
    key: Annotated[str, typer.Option(help="the peer's Ed25519 public key (base64), as it "
                                          "published it")],
    home: Home = Path("dpn-node"),
) -> None:
    """Pin a peer's identity key: before its first round, or when its rotation cannot be
    followed (e.g. it re-enrolled with a new key).

    Confirm the key id with the peer's company out of band first: trusting a key the
    coordinator made up would let the coordinator read this node's shares.

    Example: dpn node trust-peer bolt-refining --key MCowBQYDK2VwAyEA... --home /srv/dpn-node
    """
    from node import open_node, trust_peer

    with reported_errors():
        open_node(home).engine.dispose()
        pin = trust_peer(home=home, node_id=node_id, public_key=key)
    console.print(f"pinned {node_id}'s key id [bold]{pin.key_id}[/bold]")


@node_app.command("ledger-export")
def ledger_export(
    home: Home = Path("dpn-node"),
    out: Annotated[Path, typer.Option(help="file to write the ledger export to (JSON)")] = Path(
        "ledger.json"),
) -> None:
    """Write the node's privacy ledger, public key and declared budgets for an auditor.

    The export is what `dpn audit verify` checks against the coordinator's receipts. It holds
    no data: releases' queries, costs and payload hashes only.

    Example: dpn node ledger-export --home /srv/dpn-node --out ledger-2026.json
    """
    from node import export_ledger, open_node

    with reported_errors():
        context = open_node(home)
        export = export_ledger(context=context)
        out.write_text(export.model_dump_json(indent=2), encoding="utf-8")
    console.print(f"wrote {len(export.entries)} ledger entries of {export.node_id} to {out}")


@node_app.command("status")
def status(
    home: Home = Path("dpn-node"),
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
) -> None:
    """Show the node's identity, privacy budget per year and imported data.

    Example: dpn node status --home /srv/dpn-node
    """
    from node import agent_status, budget_status, data_summary, load_enrolment, open_node

    with reported_errors():
        context = open_node(home)
        budget = budget_status(engine=context.engine,
                               epsilon_per_year=context.policy.budget.epsilon_per_year,
                               delta=context.policy.budget.delta)
        summary = data_summary(engine=context.engine, coverage=context.policy.coverage)
        enrolment = load_enrolment(home)
        link = agent_status(engine=context.engine)
        context.engine.dispose()
    connection = {
        "enrolled": enrolment is not None,
        "coordinator_url": enrolment.coordinator_url if enrolment else None,
        "coordinator_key_id": enrolment.coordinator_key_id if enrolment else None,
        "connected": link.connected if link else False,
        "last_contact_at": link.last_contact_at.isoformat() if link and link.last_contact_at
        else None,
        "last_error": link.last_error if link else None,
        "consecutive_failures": link.consecutive_failures if link else 0,
    }
    if as_json:
        console.print_json(json.dumps({
            "node_id": context.settings.node_id, "key_id": context.key_id,
            "public_key": context.public_key,
            "budget": [{"year": b.year, "total": b.total, "spent": b.spent,
                        "remaining": b.remaining} for b in budget],
            "records": summary.records, "imports": summary.imports,
            "records_outside_coverage": summary.outside_coverage,
            "coordinator": connection,
        }))
        return
    console.print(f"node [bold]{context.settings.node_id}[/bold] "
                  f"({context.settings.display_name}), key id {context.key_id}")
    if enrolment is None:
        console.print("[yellow]not enrolled with a coordinator[/yellow]")
    elif link is not None and link.connected:
        console.print(f"connected to {enrolment.coordinator_url} (last contact "
                      f"{link.last_contact_at:%Y-%m-%d %H:%M:%S} UTC)")
    else:
        detail = (f"{link.consecutive_failures} failed attempt(s); last error: "
                  f"{link.last_error}" if link else "the node has not run since enrolment")
        console.print(f"[red]not connected[/red] to {enrolment.coordinator_url}: {detail}")
    console.print(f"{summary.records:,} records from {summary.imports} import(s); "
                  f"{summary.outside_coverage:,} outside the declared coverage (never released)")
    table = Table(title="privacy budget (pure-DP epsilon per year of data)")
    for column in ("year", "total", "spent", "remaining"):
        table.add_column(column, justify="right")
    for b in budget:
        table.add_row(str(b.year), f"{b.total:g}", f"{b.spent:.4g}", f"{b.remaining:.4g}")
    console.print(table)
