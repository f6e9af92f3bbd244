"""``dpn demo``: a whole pool on loopback, each service a real process talking HTTP.

1. write sample data for fictitious companies (:func:`write_sample_data`);
2. create one node per company and import its file through its mapping;
3. start the coordinator; each node enrols with a one-time token and pins its key;
4. start every node as its own process: each pulls its jobs from the coordinator over HTTP
   (no node accepts a connection from the coordinator); pool a balance per commodity;
5. print the balances and each node's budget, write them to ``balances-<year>.json``;
6. stop every process, whatever happened.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from coordinator import Balance, BalanceRequest, TokenRequest, init_coordinator
from crimmis_dpn._client import ClientError, CoordinatorClient
from crimmis_dpn._processes import ServiceError, free_port, running, start_service
from crimmis_dpn.demo._sample_data import SampleCompany, write_sample_data
from node import (
    BudgetPolicy,
    IngestError,
    NodeContext,
    NodeError,
    Policy,
    enrol,
    ingest_file,
    init_node,
    load_mapping,
)
from protocols import API_VERSION, Commodity

__all__ = ["DemoError", "DemoResult", "run_demo"]

_MARKER = ".dpn-demo"
#: The demo pool's public design (docs/sample-data.md): a site moves at most about 10,000 t
#: (cobalt) or 12,000 t (lithium) a year through the flows of the balance and keeps at most
#: about 1,200 t in stock. Bounds come from such public knowledge, never from the data.
_BOUNDS = {
    Commodity.COBALT: (10_000.0, 1_200.0),
    Commodity.LITHIUM: (12_000.0, 1_200.0),
}


class DemoError(Exception):
    """The demo could not run; the message says why and where the logs are."""


@dataclass
class DemoResult:
    """What the demo produced."""

    balances: list[Balance]
    output_file: Path
    budgets: dict[str, list[dict[str, float]]] = field(default_factory=dict)


def _prepare(workdir: Path) -> None:
    if workdir.exists():
        if not (workdir / _MARKER).exists() and any(workdir.iterdir()):
            raise DemoError(f"{workdir} exists and is not a demo directory; choose another "
                            "--workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / _MARKER).write_text("created by dpn demo; deleted by the next run\n")


def _create_nodes(companies: list[SampleCompany], workdir: Path,
                  console: Console) -> dict[str, tuple[NodeContext, int]]:
    nodes: dict[str, tuple[NodeContext, int]] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("creating nodes and importing records", total=len(companies))
        for company in companies:
            port = free_port()
            policy = Policy(budget=BudgetPolicy(epsilon_per_year=10.0,
                                                max_epsilon_per_release=2.0),
                            coverage=list(company.coverage))
            context = init_node(home=workdir / "nodes" / company.node_id,
                                node_id=company.node_id, display_name=company.display_name,
                                port=port, policy=policy)
            try:
                ingest_file(engine=context.engine, path=company.data_file,
                            mapping=load_mapping(company.mapping_file))
            except IngestError as exc:
                raise DemoError(f"sample data of {company.node_id} did not import: {exc}") from exc
            finally:
                context.engine.dispose()
            nodes[company.node_id] = (context, port)
            progress.advance(task)
    return nodes


def _budgets(nodes: dict[str, tuple[NodeContext, int]]) -> dict[str, list[dict[str, float]]]:
    budgets = {}
    with httpx.Client(timeout=10.0) as client:
        for node_id, (context, port) in nodes.items():
            token = context.settings.access_token.get_secret_value()
            response = client.get(f"http://127.0.0.1:{port}/{API_VERSION}/budget",
                                  headers={"Authorization": f"Bearer {token}"})
            response.raise_for_status()
            budgets[node_id] = response.json()
    return budgets


def _budget_table(companies: list[SampleCompany],
                  budgets: dict[str, list[dict[str, float]]]) -> Table:
    years = sorted({int(b["year"]) for rows in budgets.values() for b in rows})
    table = Table(title="privacy budget per node (epsilon per year of data; budget 10 each)",
                  title_justify="left")
    table.add_column("node")
    table.add_column("kind")
    for year in years:
        table.add_column(f"spent {year}", justify="right")
        table.add_column(f"left {year}", justify="right")
    for company in companies:
        rows = {int(b["year"]): b for b in budgets.get(company.node_id, [])}
        cells = []
        for year in years:
            row = rows.get(year)
            cells += ([f"{row['spent']:.3g}", f"{row['remaining']:.3g}"] if row else ["0", "10"])
        table.add_row(company.node_id, company.kind, *cells)
    return table


def _enrol_all(client: CoordinatorClient, nodes: dict[str, tuple[NodeContext, int]],
               coordinator_key_id: str) -> None:
    """Each node enrols itself with a one-time token bound to its id (as a company would)."""
    for node_id, (context, _) in nodes.items():
        issued = client.enrolment_token(TokenRequest(node_id=node_id, valid_hours=1))
        enrol(context=context, coordinator_url=client.url, token=issued.token,
              expected_coordinator_key_id=coordinator_key_id)
        context.engine.dispose()


def _pool(client: CoordinatorClient, year: int, epsilon: float,
          balances: list[Balance]) -> None:
    for commodity, (flow_bound, stock_bound) in _BOUNDS.items():
        balances.append(client.balance(BalanceRequest(
            commodity=commodity, period=str(year), epsilon=epsilon,
            unit_sum_bound=flow_bound, stock_unit_bound=stock_bound,
            purpose="dpn demo: pooled commodity balance",
        )))


def run_demo(*, workdir: Path, year: int = 2024, epsilon: float = 3.0,
             console: Console | None = None) -> DemoResult:
    """Run the whole demo (see the module docstring); raise :class:`DemoError` on failure."""
    from crimmis_dpn.cli._render import balance_tables, outcome_table

    console = console or Console()
    started = time.monotonic()
    _prepare(workdir)
    logs = workdir / "logs"
    logs.mkdir()
    companies = write_sample_data(workdir / "company-files", year=year)
    console.print(f"[bold]1.[/bold] sample data for {len(companies)} fictitious companies "
                  f"in {workdir / 'company-files'}")
    nodes = _create_nodes(companies, workdir, console)
    console.print(f"[bold]2.[/bold] {len(nodes)} nodes created, each file imported")
    coordinator = init_coordinator(home=workdir / "coordinator", port=free_port())
    coordinator.engine.dispose()
    token = coordinator.settings.operator_token.get_secret_value()
    hub = start_service("coordinator", ["coordinator", "serve", "--home", str(coordinator.home)],
                        port=coordinator.settings.port, log_dir=logs)
    balances: list[Balance] = []
    try:
        with running([hub]), CoordinatorClient(hub.url, token) as client:
            _enrol_all(client, nodes, coordinator.key_id)
            console.print(f"[bold]3.[/bold] coordinator started; {len(nodes)} nodes enrolled "
                          "with one-time tokens (coordinator key pinned)")
            services = [start_service(node_id, ["node", "serve", "--home", str(context.home)],
                                      port=port, log_dir=logs)
                        for node_id, (context, port) in nodes.items()]
            with running(services):
                console.print(f"[bold]4.[/bold] {len(services)} node processes pull jobs from "
                              f"the coordinator (logs in {logs}); pooling balances")
                _pool(client, year, epsilon, balances)
                budgets = _budgets(nodes)
    except (ServiceError, ClientError, NodeError, httpx.HTTPError) as exc:
        raise DemoError(f"{exc} (logs in {logs})") from exc
    for balance in balances:
        for table in balance_tables(balance):
            console.print(table)
        console.print(outcome_table(balance))
    console.print(_budget_table(companies, budgets))
    output = workdir / f"balances-{year}.json"
    output.write_text(json.dumps({
        "balances": [b.model_dump(mode="json") for b in balances],
        "budgets": budgets,
    }, indent=2), encoding="utf-8")
    console.print(f"[bold]5.[/bold] balances written to {output}; all processes stopped "
                  f"({time.monotonic() - started:.0f} s)")
    return DemoResult(balances=balances, output_file=output, budgets=budgets)
