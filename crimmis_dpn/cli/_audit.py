"""``dpn audit``: verify a node's privacy ledger and report on it (read-only).

Inputs: the node's ledger export (``dpn node ledger-export``) and the coordinator's receipts,
either fetched with the auditor credential (``--coordinator`` and ``--token``) or from a file
written by ``dpn audit receipts``. The checks run locally (:func:`protocols.audit_node`), so
an auditor trusts neither side's software to grade itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import BaseModel, Field, ValidationError
from rich.table import Table

from crimmis_dpn.cli._common import ExitCode, console, fail, reported_errors
from protocols import (
    AuditReport,
    LedgerExport,
    Receipt,
    audit_node,
    describe_validation_error,
)

__all__ = ["audit_app"]

audit_app = typer.Typer(
    help="Verify nodes' privacy ledgers against the coordinator's receipts (read-only).\n\n"
         "Example: dpn audit verify ledger.json --coordinator https://pool:8000 "
         "--token $DPN_AUDITOR_TOKEN",
    no_args_is_help=True,
)

Coordinator = Annotated[str | None, typer.Option(
    help="coordinator URL, to fetch receipts with the auditor token")]
Token = Annotated[str | None, typer.Option(
    envvar="DPN_AUDITOR_TOKEN", help="auditor bearer token (or DPN_AUDITOR_TOKEN)")]
ReceiptsFile = Annotated[Path | None, typer.Option(
    help="receipts file from `dpn audit receipts`, instead of asking the coordinator")]


class _ReceiptsFile(BaseModel):
    """What `dpn audit receipts` writes."""

    node_id: str
    receipts: list[Receipt]
    published: dict[str, str] = Field(default_factory=dict)
    keys: dict[str, str] = Field(default_factory=dict)


T = TypeVar("T")


def _read(path: Path, what: str, parse: Callable[[str], T]) -> T:
    """Parse ``path``; a missing, unreadable or invalid file is a refused input (exit 4)
    whose message names the file and every bad field."""
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise fail(f"cannot read {path}: {reason}", ExitCode.REFUSED,
                   hint=f"give the path of a {what}") from None
    except ValidationError as exc:
        raise fail(f"{path} is not a valid {what}: {describe_validation_error(exc)}",
                   ExitCode.REFUSED) from None


def _inputs(ledger_file: Path, coordinator: str | None, token: str | None,
            receipts_file: Path | None
            ) -> tuple[LedgerExport, list[Receipt], dict[str, str], dict[str, str]]:
    """The ledger, and the receipts, published figures and registered keys of its node."""
    from crimmis_dpn._client import CoordinatorClient

    ledger = _read(ledger_file, "ledger export (from `dpn node ledger-export`)",
                   LedgerExport.model_validate_json)
    if receipts_file is not None:
        data = _read(receipts_file, "receipts file (from `dpn audit receipts`)",
                     _ReceiptsFile.model_validate_json)
        return ledger, data.receipts, data.published, data.keys
    if coordinator is None or token is None:
        raise fail("give --receipts FILE, or --coordinator URL and --token", ExitCode.USAGE,
                   hint="fetch receipts with `dpn audit receipts --node-id ID`")
    with CoordinatorClient(coordinator, token) as client:
        receipts = client.receipts(node_id=ledger.node_id)
        published = client.published(ledger.node_id)
        keys = {n.key_id: n.public_key for n in client.nodes() if n.node_id == ledger.node_id}
    return ledger, receipts, published, keys


def _run(ledger_file: Path, coordinator: str | None, token: str | None,
         receipts_file: Path | None) -> tuple[LedgerExport, AuditReport]:
    """Audit: the coordinator's registered key overrides the key the export carries."""
    ledger, receipts, published, keys = _inputs(ledger_file, coordinator, token, receipts_file)
    return ledger, audit_node(ledger, receipts, now=datetime.now(UTC), published=published,
                              public_keys={**ledger.public_keys, **keys})


@audit_app.command("verify")
def verify(
    ledger_file: Annotated[Path, typer.Argument(help="the node's ledger export (JSON)")],
    coordinator: Coordinator = None,
    token: Token = None,
    receipts: ReceiptsFile = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Check a node's ledger: chain, signatures, receipts both ways, budgets, traceability.

    Exit code 0 when every check passes, 7 when the audit found problems (each named with
    the ledger entry it concerns).

    Example: dpn audit verify ledger.json --coordinator https://pool:8000 --token $TOKEN
    """
    with reported_errors():
        _, report = _run(ledger_file, coordinator, token, receipts)
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        verdict = "[green]all checks passed[/green]" if report.ok else (
            f"[red]{len(report.findings)} finding(s)[/red]")
        console.print(f"node {report.node_id}: {report.entries} entries, {report.receipts} "
                      f"receipts: {verdict}")
        table = Table("period", "releases", "epsilon spent", "budget", "within")
        for p in report.spend:
            table.add_row(str(p.period), str(p.releases), f"{p.epsilon:.4g}",
                          "" if p.budget is None else f"{p.budget:g}",
                          "yes" if p.within_budget else "[red]NO[/red]")
        console.print(table)
        for finding in report.findings:
            where = f"entry {finding.seq}: " if finding.seq is not None else ""
            console.print(f"[red]{finding.code}[/red] {where}{finding.message}",
                          highlight=False)
    if not report.ok:
        raise typer.Exit(int(ExitCode.AUDIT_FAILED))


@audit_app.command("report")
def report(
    ledger_file: Annotated[Path, typer.Argument(help="the node's ledger export (JSON)")],
    coordinator: Coordinator = None,
    token: Token = None,
    receipts: ReceiptsFile = None,
    out: Annotated[Path, typer.Option(help="HTML file to write")] = Path("audit-report.html"),
) -> None:
    """Write an HTML report of a node's ledger: budget, spend over time, releases by purpose
    and tier, and the verification's findings.

    Example: dpn audit report ledger.json --receipts receipts.json --out audit.html
    """
    from crimmis_dpn.cli._audit_report import write_audit_html

    with reported_errors():
        ledger, result = _run(ledger_file, coordinator, token, receipts)
        write_audit_html(ledger, result, out)
    console.print(f"wrote {out} ({'all checks passed' if result.ok else 'with findings'})")


@audit_app.command("receipts")
def receipts_command(
    node_id: Annotated[str, typer.Option(help="the node whose receipts to fetch")],
    coordinator: Annotated[str, typer.Option(help="coordinator URL")],
    token: Token = None,
    out: Annotated[Path, typer.Option(help="file to write")] = Path("receipts.json"),
) -> None:
    """Fetch a node's receipts, published figures and registered key from the coordinator,
    for an offline `dpn audit verify --receipts`.

    Example: dpn audit receipts --node-id miner-a --coordinator https://pool:8000 --out r.json
    """
    from crimmis_dpn._client import CoordinatorClient

    if token is None:
        raise fail("an auditor token is needed", ExitCode.USAGE,
                   hint="pass --token or set DPN_AUDITOR_TOKEN")
    with reported_errors(), CoordinatorClient(coordinator, token) as client:
        data = {"node_id": node_id,
                "receipts": [r.model_dump(mode="json")
                             for r in client.receipts(node_id=node_id)],
                "published": client.published(node_id),
                "keys": {n.key_id: n.public_key for n in client.nodes()
                         if n.node_id == node_id}}
    out.write_text(json.dumps(data, indent=2), encoding="utf-8")
    console.print(f"wrote {len(data['receipts'])} receipts of {node_id} to {out}")
