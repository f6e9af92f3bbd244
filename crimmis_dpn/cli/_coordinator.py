"""``dpn coordinator ...``: run the pool's coordinator and operate it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from crimmis_dpn.cli._common import ExitCode, console, fail, reported_errors

__all__ = ["coordinator_app"]

coordinator_app = typer.Typer(
    help="Run the pool's coordinator; enrol nodes; pool queries and commodity balances.",
    no_args_is_help=True,
)

Home = Annotated[Path, typer.Option("--home", envvar="DPN_COORDINATOR_HOME",
                                    help="coordinator home directory")]
Url = Annotated[str | None, typer.Option("--url", envvar="DPN_COORDINATOR_URL",
                                         help="coordinator URL (default: from --home settings)")]
Token = Annotated[str | None, typer.Option("--token", envvar="DPN_OPERATOR_TOKEN",
                                           help="operator token (default: from --home settings)")]


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
) -> None:
    """Create a coordinator home with settings and a fresh operator token.

    Example: dpn coordinator init --home /srv/dpn-coordinator
    """
    from coordinator import create_schema, init_settings, make_engine

    with reported_errors():
        settings = init_settings(home=home, port=port, database_url=database_url)
    engine = make_engine(settings.database_url)
    create_schema(engine=engine)
    engine.dispose()
    console.print(f"created coordinator in {home}; operator token is in "
                  f"{home / 'coordinator.toml'}")
    console.print(f"  next: dpn coordinator serve --home {home}")


@coordinator_app.command("serve")
def serve(
    home: Home = Path("dpn-coordinator"),
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
) -> None:
    """Serve the coordinator's API (/v1).

    Example: dpn coordinator serve --home /srv/dpn-coordinator
    """
    import uvicorn

    from coordinator import create_app, create_schema, load_settings, make_engine

    with reported_errors():
        settings = load_settings(home)
    engine = make_engine(settings.database_url)
    create_schema(engine=engine)
    uvicorn.run(create_app(settings=settings, engine=engine), host=host or settings.host,
                port=port or settings.port, log_level="info")


@coordinator_app.command("enrol")
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
    """Enrol a node (its key is checked against --key-id when given).

    Example: dpn coordinator enrol --node-url https://dpn.acme.example:8701
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
    for column in ("node", "name", "url", "key id", "active"):
        table.add_column(column)
    for v in views:
        table.add_row(v.node_id, v.display_name, v.url, v.key_id, "yes" if v.active else "no")
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
    output: Annotated[Path | None, typer.Option(help="also write the balance as JSON here")] = None,
    home: Home = Path("dpn-coordinator"), url: Url = None, token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Pool the commodity balance of one year from every enrolled node.

    Example: dpn coordinator balance --commodity cobalt --period 2024 --output cobalt-2024.json
    """
    from coordinator import BalanceRequest
    from crimmis_dpn.cli._render import balance_tables, outcome_table
    from protocols import Commodity, parse_code

    with reported_errors():
        request = BalanceRequest(commodity=parse_code(Commodity, commodity, field="commodity"),
                                 period=period, epsilon=epsilon, unit_sum_bound=unit_bound,
                                 stock_unit_bound=stock_bound)
        with _client(home, url, token) as client:
            result = client.balance(request)
    text = result.model_dump_json(indent=2)
    if output is not None:
        output.write_text(text, encoding="utf-8")
    if as_json:
        console.print_json(text)
        return
    for table in balance_tables(result):
        console.print(table)
    console.print(outcome_table(result))
    if output is not None:
        console.print(f"written to {output}")
