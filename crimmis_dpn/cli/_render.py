"""Rich renderings of balances and node tables for the terminal."""

from __future__ import annotations

from rich.table import Table

from coordinator import Balance, BalanceFigure, CellStatus

__all__ = ["balance_tables", "format_figure", "outcome_table", "price_table", "totals_table"]

_COLUMNS = [
    ("Production", "production"),
    ("Imports", "imports"),
    ("Exports", "exports"),
    ("Stock change", "stock_change"),
    ("Apparent cons.", "apparent_consumption"),
    ("Consumption", "consumption"),
    ("Recycling in", "recycling_input"),
]


def format_figure(figure: BalanceFigure) -> str:
    """``12,345 ±1,234`` (95% noise interval), ``suppr.`` or ``·`` (no company reports it)."""
    if figure.status is CellStatus.SUPPRESSED:
        return "[yellow]suppr.[/yellow]"
    if figure.status is CellStatus.NOT_COVERED or figure.value is None:
        return "[dim]·[/dim]"
    return f"{figure.value:,.0f} [dim]±{figure.ci95 or 0:,.0f}[/dim]"


def balance_tables(balance: Balance) -> list[Table]:
    """One table per value-chain stage that has published or suppressed figures."""
    tables = []
    for stage in sorted({row.stage for row in balance.rows}):
        table = Table(
            title=f"{balance.commodity} {balance.period}, stage {stage} "
                  f"(tonnes contained; ± = 95% DP noise interval)",
            title_justify="left",
        )
        rows = [row for row in balance.rows if row.stage == stage]
        columns = [(title, attr) for title, attr in _COLUMNS
                   if any(getattr(row, attr).status is not CellStatus.NOT_COVERED
                          for row in rows)]
        table.add_column("Country")
        for title, _ in columns:
            table.add_column(title, justify="right")
        for row in rows:
            table.add_row(row.country,
                          *(format_figure(getattr(row, attr)) for _, attr in columns))
        tables.append(table)
    return tables


def totals_table(balance: Balance) -> Table | None:
    """World and region totals measured by their own queries; ``None`` if none were asked."""
    if not balance.totals:
        return None
    table = Table(title=f"{balance.commodity} {balance.period}: measured totals (own queries, "
                        "not sums of the rows; tonnes contained, ± = 95% DP noise interval)",
                  title_justify="left")
    for column in ("Area", "Stage", "Figure"):
        table.add_column(column)
    table.add_column("Value", justify="right")
    for total in sorted(balance.totals, key=lambda t: (t.level != "world", t.area, t.stage,
                                                       t.figure)):
        table.add_row(total.area, total.stage, total.figure.replace("_", " "),
                      format_figure(total.value))
    return table


def price_table(balance: Balance) -> Table | None:
    """Volume-weighted average prices by contract type; ``None`` if prices were not asked."""
    if not balance.prices:
        return None
    table = Table(title=f"{balance.commodity} {balance.period}: volume-weighted average prices "
                        "(USD per tonne contained; ± = 95% DP noise interval)",
                  title_justify="left")
    table.add_column("Contract")
    table.add_column("Price", justify="right")
    table.add_column("Priced tonnes", justify="right")
    for price in balance.prices:
        if price.status is CellStatus.PUBLISHED and price.value is not None:
            value = f"{price.value:,.0f} [dim]±{price.ci95 or 0:,.0f}[/dim]"
            tonnes = f"{price.tonnes:,.0f}" if price.tonnes is not None else "-"
        else:
            value = ("[yellow]suppr.[/yellow]" if price.status is CellStatus.SUPPRESSED
                     else "[dim]·[/dim]")
            tonnes = "-"
        table.add_row(price.contract_type.replace("_", " "), value, tonnes)
    return table


def outcome_table(balance: Balance) -> Table:
    """Each node's part in the balance and the epsilon it spent, per year."""
    years = sorted({y for per in balance.epsilon_by_node.values() for y in per})
    table = Table(title="nodes: status and privacy budget spent on this balance",
                  title_justify="left")
    table.add_column("node")
    table.add_column("status")
    for year in years:
        table.add_column(f"epsilon {year}", justify="right")
    table.add_column("note")
    for outcome in balance.nodes:
        spent = balance.epsilon_by_node.get(outcome.node_id, {})
        table.add_row(outcome.node_id, str(outcome.status),
                      *(f"{spent[y]:.3g}" if y in spent else "-" for y in years),
                      outcome.message or "")
    return table
