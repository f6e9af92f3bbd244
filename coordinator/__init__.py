"""The pool's coordinator: node registry, pooled queries, commodity balances.

It only ever sees nodes' DP answers. Depends on :mod:`protocols`, never on :mod:`node`.
"""

from coordinator._api import create_app
from coordinator._balance import (
    BALANCE_FLOWS,
    DEFAULT_STOCK_BOUNDS,
    DEFAULT_UNIT_BOUNDS,
    assemble_balance,
    balance_queries,
    pooled_balance,
)
from coordinator._db import create_schema, make_engine
from coordinator._errors import (
    CoordinatorConfigError,
    CoordinatorError,
    EnrolmentError,
    QueryFailedError,
    UnknownQueryError,
)
from coordinator._fanout import NodeAddress, fan_out
from coordinator._models import (
    Balance,
    BalanceFigure,
    BalanceRequest,
    BalanceRow,
    CellStatus,
    EnrolRequest,
    NodeOutcome,
    NodeStatus,
    NodeView,
    PooledCell,
    PooledResult,
)
from coordinator._pooling import pool_answers, sum_error_bar
from coordinator._queries import get_result, run_pooled_query
from coordinator._registry import enrol_node, list_nodes, node_addresses
from coordinator._settings import CoordinatorSettings, init_settings, load_settings

__all__ = [
    "BALANCE_FLOWS",
    "DEFAULT_STOCK_BOUNDS",
    "DEFAULT_UNIT_BOUNDS",
    "Balance",
    "BalanceFigure",
    "BalanceRequest",
    "BalanceRow",
    "CellStatus",
    "CoordinatorConfigError",
    "CoordinatorError",
    "CoordinatorSettings",
    "EnrolRequest",
    "EnrolmentError",
    "NodeAddress",
    "NodeOutcome",
    "NodeStatus",
    "NodeView",
    "PooledCell",
    "PooledResult",
    "QueryFailedError",
    "UnknownQueryError",
    "assemble_balance",
    "balance_queries",
    "create_app",
    "create_schema",
    "enrol_node",
    "fan_out",
    "get_result",
    "init_settings",
    "list_nodes",
    "load_settings",
    "make_engine",
    "node_addresses",
    "pool_answers",
    "pooled_balance",
    "run_pooled_query",
    "sum_error_bar",
]
