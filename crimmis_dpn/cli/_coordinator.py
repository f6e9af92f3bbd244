"""``dpn coordinator ...``: run the pool's coordinator and operate it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from crimmis_dpn.cli._common import ExitCode, console, fail, reported_errors
from crimmis_dpn.cli._progress import follow_query, progress_enabled, spinner, stages

if TYPE_CHECKING:
    from protocols import AggregateQuery

__all__ = ["coordinator_app"]

coordinator_app = typer.Typer(
    help="Run the pool's coordinator; enrol nodes; pool queries and commodity balances.\n\n"
         "Example: dpn coordinator balance --commodity cobalt --period 2024 --home "
         "/srv/dpn-coordinator",
    no_args_is_help=True,
)

Home = Annotated[Path, typer.Option("--home", envvar="DPN_COORDINATOR_HOME",
                                    help="coordinator home directory")]
Url = Annotated[str | None, typer.Option("--url", envvar="DPN_COORDINATOR_URL",
                                         help="coordinator URL (default: from --home settings)")]
Token = Annotated[str | None, typer.Option("--token", envvar="DPN_OPERATOR_TOKEN",
                                           help="operator token (default: from --home settings)")]
WaitSeconds = Annotated[float, typer.Option(
    help="how long to wait for the answers (exit 6 if the query is still running)")]
ResultOutput = Annotated[Path | None, typer.Option(
    help="also write the pooled result as JSON here (`dpn coordinator report --prices`)")]
AsJson = Annotated[bool, typer.Option("--json", help="print the result as JSON")]


def _client(home: Path, url: str | None, token: str | None):  # type: ignore[no-untyped-def]
    from coordinator import load_settings
    from crimmis_dpn._client import CoordinatorClient

    if url is None or token is None:
        if not (home / "coordinator.toml").is_file():
            raise fail("no coordinator URL and token given", ExitCode.CONFIG,
                       "pass --url and --token (or DPN_COORDINATOR_URL and DPN_OPERATOR_TOKEN),"
                       " or --home of a coordinator")
        with reported_errors():
            settings = load_settings(home)
        url = url or f"http://{settings.host}:{settings.port}"
        token = token or settings.operator_token.get_secret_value()
    return CoordinatorClient(url, token)


@coordinator_app.command("init")
def init(
    home: Home = Path("dpn-coordinator"),
    port: Annotated[int, typer.Option(help="port of `dpn coordinator serve`")] = 8700,
    database_url: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL (default: SQLite in home)")] = None,
    allow_push: Annotated[bool, typer.Option(
        help="development only: allow enrolling nodes by URL and pushing queries")] = False,
) -> None:
    """Create a coordinator home: settings, operator and auditor tokens, signing key, database.

    Example: dpn coordinator init --home /srv/dpn-coordinator
    """
    from coordinator import init_coordinator

    with reported_errors():
        context = init_coordinator(home=home, port=port, database_url=database_url,
                                   allow_push=allow_push)
    context.engine.dispose()
    console.print(f"created coordinator in {home}; operator and auditor tokens are in "
                  f"{home / 'coordinator.toml'}")
    console.print(f"  signing key id (nodes check it at enrolment): [bold]{context.key_id}"
                  "[/bold]")
    console.print(f"  next: dpn coordinator serve --home {home}")


@coordinator_app.command("serve")
def serve(
    home: Home = Path("dpn-coordinator"),
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve HTTPS")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert")] = None,
) -> None:
    """Serve the coordinator's API (/v1); nodes poll it for jobs.

    Example: dpn coordinator serve --home /srv/dpn-coordinator --tls-cert c.pem --tls-key k.pem
    """
    import uvicorn

    from coordinator import create_app, create_schema, open_coordinator

    with reported_errors():
        context = open_coordinator(home)
    create_schema(engine=context.engine)
    settings = context.settings
    cert = tls_cert or settings.tls_cert_file
    key = tls_key or settings.tls_key_file
    uvicorn.run(create_app(context), host=host or settings.host, port=port or settings.port,
                log_level="info", ssl_certfile=str(cert) if cert else None,
                ssl_keyfile=str(key) if key else None)


@coordinator_app.command("enrolment-token")
def enrolment_token(
    node_id: Annotated[str | None, typer.Option(
        "--node-id", help="bind the token to this node id (recommended)")] = None,
    valid_hours: Annotated[float, typer.Option(help="hours until the token expires")] = 72.0,
    home: Home = Path("dpn-coordinator"), url: Url = None, token: Token = None,
) -> None:
    """Issue a one-time enrolment token; give it to the node owner over a separate channel.

    Example: dpn coordinator enrolment-token --node-id acme-mining
    """
    from coordinator import TokenRequest

    with reported_errors(), _client(home, url, token) as client:
        issued = client.enrolment_token(TokenRequest(node_id=node_id, valid_hours=valid_hours))
    console.print(issued.token, highlight=False)
    console.print(f"[dim]one-time token, valid until {issued.expires_at:%Y-%m-%d %H:%M} UTC"
                  f"{' for node ' + node_id if node_id else ''}; the node runs: dpn node enrol "
                  f"--coordinator {client.url} --token TOKEN[/dim]")


@coordinator_app.command("revoke")
def revoke(
    node_id: Annotated[str, typer.Argument(help="node to revoke")],
    home: Home = Path("dpn-coordinator"), url: Url = None, token: Token = None,
) -> None:
    """Revoke a node: its messages are refused and it gets no new jobs.

    Example: dpn coordinator revoke acme-mining
    """
    with reported_errors(), _client(home, url, token) as client:
        client.revoke(node_id)
    console.print(f"revoked node {node_id}")


@coordinator_app.command("queries")
def queries(
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 20,
    home: Home = Path("dpn-coordinator"), url: Url = None, token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
) -> None:
    """Show the query history (operators and auditors).

    Example: dpn coordinator queries --token "$DPN_AUDITOR_TOKEN" --url https://pool.example
    """
    with reported_errors(), _client(home, url, token) as client:
        rows = client.history(limit=limit)
    if as_json:
        console.print_json(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    table = Table(title="pooled queries, newest first")
    for column in ("query", "purpose", "status", "quorum", "created", "error"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.query_id[:12], r.purpose, r.status, str(r.quorum),
                      f"{r.created_at:%Y-%m-%d %H:%M}", r.error or "")
    console.print(table)


@coordinator_app.command("enrol-push")
def enrol(
    node_url: Annotated[str, typer.Option("--node-url", help="the node's base URL")],
    node_token: Annotated[str, typer.Option("--node-token", envvar="DPN_NODE_ACCESS_TOKEN",
                                            help="the node's access token (from its owner)")],
    key_id: Annotated[str | None, typer.Option(
        "--key-id", help="key fingerprint the node owner gave you; enrolment fails on mismatch"
    )] = None,
    home: Home = Path("dpn-coordinator"),
    url: Url = None,
    token: Token = None,
) -> None:
    """Development only: enrol a node by URL to push queries to it (needs allow_push).

    Example: dpn coordinator enrol-push --node-url https://dpn.acme.example:8701
    --node-token TOKEN --key-id 1a2b3c4d5e6f7a8b
    """
    from coordinator import EnrolRequest

    with reported_errors(), _client(home, url, token) as client:
        view = client.enrol(EnrolRequest(url=node_url, access_token=node_token,
                                         expected_key_id=key_id))
    console.print(f"enrolled node [bold]{view.node_id}[/bold] ({view.display_name}), "
                  f"key id {view.key_id}")


@coordinator_app.command("nodes")
def nodes(
    home: Home = Path("dpn-coordinator"), url: Url = None, token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
) -> None:
    """List enrolled nodes.

    Example: dpn coordinator nodes --home /srv/dpn-coordinator
    """
    with reported_errors(), _client(home, url, token) as client:
        views = client.nodes()
    if as_json:
        console.print_json(json.dumps([v.model_dump(mode="json") for v in views]))
        return
    table = Table(title="enrolled nodes")
    for column in ("node", "name", "transport", "key id", "active", "last seen"):
        table.add_column(column)
    for v in views:
        seen = f"{v.last_seen_at:%Y-%m-%d %H:%M:%S}" if v.last_seen_at else "never"
        table.add_row(v.node_id, v.display_name, v.transport, v.key_id,
                      "yes" if v.active else "revoked", seen)
    console.print(table)


@coordinator_app.command("balance")
def balance(
    commodity: Annotated[str, typer.Option(help="commodity code, e.g. cobalt")],
    period: Annotated[str, typer.Option(help="calendar year, e.g. 2024")],
    epsilon: Annotated[float, typer.Option(
        help="epsilon each node spends on this balance (2/3 on flows, 1/3 on stocks)")] = 1.0,
    unit_bound: Annotated[float | None, typer.Option(
        help="tonnes one site may contribute to the year's flows (default: table)")] = None,
    stock_bound: Annotated[float | None, typer.Option(
        help="tonnes one site's closing stock may contribute (default: table)")] = None,
    totals: Annotated[str, typer.Option(
        help="world and region totals measured by their own queries: none, world or "
             "world+regions (they take part of --epsilon; docs/balances.md)")] = "none",
    price_epsilon: Annotated[float | None, typer.Option(
        help="also pool volume-weighted prices by contract type at this extra epsilon")] = None,
    price_bound: Annotated[float | None, typer.Option(
        help="USD per tonne one record's price is clipped to (default: table)")] = None,
    min_contributors: Annotated[int, typer.Option(
        help="companies a cell needs to be published (at least 3)")] = 3,
    purpose: Annotated[str, typer.Option(
        help="why the pool asks; recorded in every node's ledger")] = "pooled commodity balance",
    output: Annotated[Path | None, typer.Option(help="also write the balance as JSON here")] = None,
    home: Home = Path("dpn-coordinator"), url: Url = None, token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Pool the commodity balance of one year from every enrolled node.

    Example: dpn coordinator balance --commodity cobalt --period 2024 --output cobalt-2024.json
    """
    from coordinator import BalanceRequest
    from crimmis_dpn.cli._render import balance_tables, outcome_table, price_table, totals_table
    from protocols import Commodity, parse_code

    with reported_errors():
        request = BalanceRequest.model_validate({
            "commodity": parse_code(Commodity, commodity, field="commodity"), "period": period,
            "epsilon": epsilon, "unit_sum_bound": unit_bound, "stock_unit_bound": stock_bound,
            "totals": totals, "price_epsilon": price_epsilon, "price_bound": price_bound,
            "min_contributors": min_contributors, "purpose": purpose})
        with _client(home, url, token) as client, spinner(
                f"pooling the {request.commodity} balance of {period}: waiting for the nodes' "
                "answers", enabled=progress_enabled(as_json)):
            result = client.balance(request)
    text = result.model_dump_json(indent=2)
    if output is not None:
        output.write_text(text, encoding="utf-8")
    if as_json:
        console.print_json(text)
        return
    for table in balance_tables(result):
        console.print(table)
    for extra in (totals_table(result), price_table(result)):
        if extra is not None:
            console.print(extra)
    console.print(outcome_table(result))
    if output is not None:
        console.print(f"written to {output}")


def _check_finished(status: str, error: str | None, query_id: str, waited: float) -> None:
    """Exit 4 if the pooled query failed, 6 if it is still running after ``waited`` s."""
    if status == "completed":
        return
    if status == "failed":
        raise fail(f"query {query_id} failed: {error}", ExitCode.REFUSED)
    raise fail(f"query {query_id} is still {status} after {waited:g} s", ExitCode.TIMEOUT,
               "it goes on at the coordinator: see `dpn coordinator queries`, or wait longer "
               "with --wait-seconds")


@coordinator_app.command("query")
def query_command(
    query_file: Annotated[Path, typer.Argument(
        help="an aggregate query as JSON (docs/api.md); a missing query_id is generated",
        exists=True, dir_okay=False)],
    quorum: Annotated[int, typer.Option(help="answers needed")] = 3,
    deadline_seconds: Annotated[float | None, typer.Option(
        help="the nodes' deadline (default: the coordinator's)")] = None,
    wait_seconds: WaitSeconds = 300.0,
    output: ResultOutput = None,
    home: Home = Path("dpn-coordinator"), url: Url = None, token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Run one pooled aggregate query and wait for the nodes' answers.

    On a terminal, stderr shows a bar of the nodes that answered out of those asked. A query
    file with a query_id is idempotent: running it again shows the same query.

    Example: dpn coordinator query cobalt-prices-2024.json --output prices-2024.json
    """
    import uuid

    from protocols import AggregateQuery

    show = progress_enabled(as_json)
    with reported_errors():
        fields = _json_object(query_file, "an aggregate query")
        fields.setdefault("query_id", uuid.uuid4().hex)
        query = AggregateQuery.model_validate(fields)
    _run_query(query, quorum=quorum, deadline_seconds=deadline_seconds,
               wait_seconds=wait_seconds, output=output, home=home, url=url, token=token,
               as_json=as_json, show=show)


@coordinator_app.command("eu-sourcing")
def eu_sourcing(
    commodity: Annotated[str, typer.Option(help="commodity code, e.g. cobalt")],
    period: Annotated[int, typer.Option(help="calendar year, e.g. 2024")],
    epsilon: Annotated[float, typer.Option(help="epsilon each node spends")] = 0.5,
    unit_bound: Annotated[float | None, typer.Option(
        help="tonnes one site may contribute to the year's flows (default: the balance's "
             "table)")] = None,
    quorum: Annotated[int, typer.Option(help="answers needed")] = 3,
    wait_seconds: WaitSeconds = 300.0,
    output: ResultOutput = None,
    home: Home = Path("dpn-coordinator"), url: Url = None, token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Pool the year's imports into the EU27 by partner: the EU-sourcing side of supply risk.

    Give the result to `dpn coordinator report --prices` with the year's balance.
    The report then computes HHI_WGI,t(EU sourcing) (docs/indicators.md).

    Example: dpn coordinator eu-sourcing --commodity cobalt --period 2024 --output
    cobalt-eu-sourcing-2024.json
    """
    from coordinator import DEFAULT_UNIT_BOUNDS, eu_sourcing_query
    from protocols import Commodity, parse_code

    with reported_errors():
        code = parse_code(Commodity, commodity, field="commodity")
        query = eu_sourcing_query(commodity=code, year=period, epsilon=epsilon,
                                  unit_sum_bound=unit_bound or DEFAULT_UNIT_BOUNDS[code])
    _run_query(query, quorum=quorum, deadline_seconds=None, wait_seconds=wait_seconds,
               output=output, home=home, url=url, token=token, as_json=as_json,
               show=progress_enabled(as_json))


def _json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; exit 2 naming the file if it is not one."""
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise fail(f"{path} is not a JSON query: {exc}", ExitCode.USAGE) from None
    if not isinstance(fields, dict):
        raise fail(f"{path} must hold one JSON object ({what})", ExitCode.USAGE)
    return fields


def _run_query(query: AggregateQuery, *, quorum: int, deadline_seconds: float | None,
               wait_seconds: float, output: Path | None, home: Path, url: str | None,
               token: str | None, as_json: bool, show: bool) -> None:
    """Submit ``query``, follow it to its end, write and print the pooled result."""
    with reported_errors(), _client(home, url, token) as client:
        result = follow_query(
            client.query(query, quorum=quorum, deadline_seconds=deadline_seconds,
                         wait_seconds=0.0),
            lambda wait: client.result(query.query_id, wait_seconds=wait),
            label="nodes answered", enabled=show, timeout=wait_seconds)
    text = result.model_dump_json(indent=2)
    if output is not None:
        output.write_text(text, encoding="utf-8")
    _check_finished(result.status, result.error, query.query_id, wait_seconds)
    if as_json:
        console.print_json(text)
        return
    cells = Table(title=f"query {query.query_id[:12]}: {query.kind} of "
                        f"{', '.join(str(f) for f in query.flows)} (± = 95% DP noise interval)",
                  title_justify="left")
    for column in (*(str(g) for g in query.group_by), "status", "value"):
        cells.add_column(column, justify="right" if column == "value" else "left")
    for cell in result.cells:
        value = (f"{cell.value:,.6g} [dim]±{cell.ci95 or 0:,.3g}[/dim]"
                 if cell.value is not None else "")
        cells.add_row(*cell.key, str(cell.status), value)
    console.print(cells)
    nodes_table = Table(title="nodes", title_justify="left")
    for column in ("node", "status", "epsilon", "note"):
        nodes_table.add_column(column)
    for n in result.nodes:
        nodes_table.add_row(n.node_id, str(n.status),
                            "" if n.epsilon is None else f"{n.epsilon:.3g}", n.message or "")
    console.print(nodes_table)
    if output is not None:
        console.print(f"written to {output}")


@coordinator_app.command("secure-query")
def secure_query_command(
    query_file: Annotated[Path, typer.Argument(
        help="a secure query as JSON: {\"query\": <aggregate sum query>, \"delta\", "
             "\"rho\", \"clip\", \"tolerate_dropouts\"} (docs/secure-aggregation.md), "
             "or an aggregate sum query alone; a missing query_id is generated",
        exists=True, dir_okay=False)],
    stage_seconds: Annotated[float | None, typer.Option(
        help="deadline of each of the round's six steps (default 30 s); nodes that have not "
             "replied by then are dropouts")] = None,
    wait_seconds: Annotated[float, typer.Option(
        help="how long to wait for the round (exit 6 if it is still running)")] = 300.0,
    output: Annotated[Path | None, typer.Option(
        help="also write the result as JSON here")] = None,
    home: Home = Path("dpn-coordinator"), url: Url = None, token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Pool a sum by secure aggregation: nodes send masked answers with shares of the noise;
    the coordinator decodes only the noisy pooled sums.

    Needs at least 3 active pull-mode nodes; up to a third may drop out. The round runs in
    the coordinator's memory: a coordinator restart fails it (run it again with a new query
    id).

    Example: dpn coordinator secure-query cobalt-production-2024.json
    """
    import time
    import uuid

    from protocols import SecureAggregateQuery

    show = progress_enabled(as_json)
    with reported_errors():
        fields = _json_object(query_file, "a secure query")
        if "query" not in fields:
            fields = {"query": fields}
        if isinstance(fields["query"], dict):
            fields["query"].setdefault("query_id", uuid.uuid4().hex)
        secure = SecureAggregateQuery.model_validate(fields)
        query = secure.query
        with _client(home, url, token) as client, spinner(
                f"secure round {query.query_id[:12]} running", enabled=show):
            status = client.secure_query(secure, stage_seconds=stage_seconds)
            stop = time.monotonic() + wait_seconds
            while status.status == "running" and time.monotonic() < stop:
                status = client.secure_result(
                    query.query_id, wait_seconds=min(5.0, max(stop - time.monotonic(), 0.1)))
    text = status.model_dump_json(indent=2)
    if output is not None:
        output.write_text(text, encoding="utf-8")
    _check_finished(status.status, status.error, query.query_id, wait_seconds)
    if as_json:
        console.print_json(text)
        return
    rho = f"rho {status.released_rho:.4g}" if status.released_rho is not None else ""
    cells = Table(title=f"secure query {query.query_id[:12]}: sum of "
                        f"{', '.join(str(f) for f in query.flows)} ({rho}; ± = 95% noise "
                        "interval)", title_justify="left")
    for column in (*(str(g) for g in query.group_by), "status", "value"):
        cells.add_column(column, justify="right" if column == "value" else "left")
    for cell in status.cells:
        value = (f"{cell.value:,.6g} [dim]±{cell.ci95 or 0:,.3g}[/dim]"
                 if cell.value is not None else (cell.reason or ""))
        cells.add_row(*cell.key, str(cell.status), value)
    console.print(cells)
    nodes_table = Table(title="nodes", title_justify="left")
    for column in ("node", "status", "step", "note"):
        nodes_table.add_column(column)
    for n in status.nodes:
        nodes_table.add_row(n.node_id, str(n.status), n.step or "", n.message or "")
    console.print(nodes_table)
    if output is not None:
        console.print(f"written to {output}")


@coordinator_app.command("company-concentration")
def company_concentration_command(
    sums: Annotated[str, typer.Option(help="query id of a completed secure 'sum' round")],
    squares: Annotated[str, typer.Option(
        help="query id of a completed secure 'sum_of_squares' round over the same cells")],
    output: Annotated[Path | None, typer.Option(
        help="also write the cells as JSON here (for `dpn coordinator report "
             "--company-concentration`)")] = None,
    home: Home = Path("dpn-coordinator"), url: Url = None, token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False,
) -> None:
    """Company concentration (HHI by company) per cell, from two secure rounds: S2 / S1^2.

    Run `dpn coordinator secure-query` twice over the same cells, once with
    "statistic": "sum" and once with "statistic": "sum_of_squares"; no company's value is
    seen by anyone (docs/indicators.md). The top-3 company share cannot be computed from sums.

    Example: dpn coordinator company-concentration --sums 5f0c... --squares 9a1e...
    """
    with reported_errors(), _client(home, url, token) as client:
        cells = client.company_concentration(sums=sums, squares=squares)
    if output is not None:
        output.write_text(json.dumps({"sums": sums, "squares": squares, "cells": cells},
                                     indent=2), encoding="utf-8")
    if as_json:
        console.print_json(json.dumps(cells))
        return
    table = Table(title="company concentration (HHI, 0..1; ± = 95% noise interval)",
                  title_justify="left")
    for column in ("cell", "HHI", "±", "note"):
        table.add_column(column)
    for cell in cells:
        hhi = cell.get("hhi")
        key = " / ".join(cell["key"])
        if hhi is None:
            table.add_row(key, "", "", cell.get("reason") or "")
            continue
        ci = hhi.get("ci95")
        table.add_row(key, f"{hhi['value']:.3f}", "" if ci is None else f"{ci:.3f}",
                      "clamped to [1/n, 1]" if hhi.get("clamped") else "")
    console.print(table)


@coordinator_app.command("synthetic")
def synthetic(
    commodity: Annotated[list[str], typer.Option(help="commodity code (repeatable)")],
    year: Annotated[int, typer.Option(help="calendar year: monthly records of this year")],
    epsilon: Annotated[float, typer.Option(help="epsilon each node spends on its table")] = 1.0,
    rows: Annotated[int, typer.Option(help="synthetic rows per node")] = 5000,
    quantity_max: Annotated[float, typer.Option(
        help="public clipping bound of a record's quantity, tonnes")] = 10_000.0,
    method: Annotated[str, typer.Option(help="dp_copula or mst")] = "dp_copula",
    quorum: Annotated[int, typer.Option(help="tables needed")] = 3,
    output: Annotated[Path, typer.Option(help="write the pooled rows here (.parquet/.csv)")] = Path(
        "synthetic.parquet"),
    compare_balance: Annotated[Path | None, typer.Option(
        help="a balance JSON (from `dpn coordinator balance --output`) to compare with")] = None,
    wait_seconds: Annotated[float, typer.Option(
        help="how long to wait for the nodes' tables (exit 6 if the query is still running)")
    ] = 300.0,
    home: Home = Path("dpn-coordinator"), url: Url = None, token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON summary")] = False,
) -> None:
    """Pool DP synthetic tables (data tier bulk) from the nodes that release them.

    On a terminal, stderr shows the stages: the nodes fitting their tables (answered out of
    asked), pooling the rows, writing OUTPUT and the balance from the synthetic data.

    Example: dpn coordinator synthetic --commodity cobalt --year 2024 --output co.parquet
    """
    import uuid

    import polars as pl

    from coordinator import Balance, compare_balances, synthetic_balance
    from protocols import SyntheticQuery

    show = progress_enabled(as_json)
    with reported_errors(), stages(show) as shown:
        query = SyntheticQuery.model_validate({
            "query_id": uuid.uuid4().hex, "method": method, "commodities": commodity,
            "periods": [f"{year}-{m:02d}" for m in range(1, 13)], "epsilon": epsilon,
            "rows": rows, "quantity_max_t": quantity_max,
            "purpose": "pooled synthetic dataset"})
        with _client(home, url, token) as client:
            pooled = follow_query(
                client.synthetic(query, quorum=quorum, wait_seconds=0.0),
                lambda wait: client.synthetic_result(query.query_id, wait_seconds=wait),
                label=f"nodes fitting {method} tables", enabled=show, timeout=wait_seconds,
                progress=shown.progress)
        _check_finished(pooled.status, pooled.error, query.query_id, wait_seconds)
        with shown.stage(f"pooling {len(pooled.rows):,} weighted rows"):
            frame = pl.DataFrame(pooled.rows, schema=pooled.columns, orient="row",
                                 infer_schema_length=None)
        with shown.stage(f"writing {output}"):
            if output.suffix == ".csv":
                frame.write_csv(output)
            else:
                frame.write_parquet(output)
        with shown.stage("balance from the synthetic data"):
            cells = []
            for code in commodity:
                cells += synthetic_balance(pooled, commodity=code, year=year)
            if compare_balance is not None:
                cells = compare_balances(
                    cells, Balance.model_validate_json(compare_balance.read_text()))
    if as_json:
        console.print_json(json.dumps({
            "query_id": query.query_id, "rows": frame.height, "output": str(output),
            "epsilon_by_node": pooled.epsilon_by_node,
            "evaluation_by_node": pooled.evaluation_by_node,
            "balance": [c.model_dump(mode="json") for c in cells]}))
        return
    console.print(f"{frame.height:,} synthetic rows from {len(pooled.epsilon_by_node)} node(s) "
                  f"written to {output}")
    table = Table(title="balance from synthetic data (tonnes; weighted sums)")
    for column in ("country", "stage", "flow", "synthetic", "aggregate ± 95%"):
        table.add_column(column)
    for c in cells:
        agg = (f"{c.aggregate:,.0f} ± {c.aggregate_ci95 or 0:,.0f}" if c.aggregate is not None
               else "")
        table.add_row(c.country, c.stage, c.flow,
                      f"{c.synthetic:,.0f}" if c.synthetic is not None else str(c.status), agg)
    console.print(table)


def _register_report() -> None:
    from crimmis_dpn.cli._report import register_report_commands

    register_report_commands(coordinator_app)


_register_report()
