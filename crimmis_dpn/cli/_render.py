"""Rich renderings of balances and node tables for the terminal."""

from __future__ import annotations

from rich.table import Table

from coordinator import Balance, BalanceFigure, CellStatus

__all__ = ["balance_tables", "format_figure", "outcome_table"]

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
