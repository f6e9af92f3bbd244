"""The company's node: imports its records, answers pooled queries with DP releases only.

Raw records never leave the node; every release is charged to the node's privacy budget
before it is returned. Depends on :mod:`protocols` (and :mod:`synthetic`), never on
:mod:`coordinator`.
"""

from node._db import create_schema, make_engine
from node._errors import (
    BudgetExceededError,
    IngestError,
    IngestProblem,
    NodeConfigError,
    NodeError,
    QueryRefusedError,
)
from node._home import NodeContext, init_node, open_node
from node._policy import BudgetPolicy, Policy, ReleasePolicy, check_query, load_policy
from node._settings import NodeSettings, load_settings

__all__ = [
    "BudgetExceededError",
    "BudgetPolicy",
    "IngestError",
    "IngestProblem",
    "NodeConfigError",
    "NodeContext",
    "NodeError",
    "NodeSettings",
    "Policy",
    "QueryRefusedError",
    "ReleasePolicy",
    "check_query",
    "create_schema",
    "init_node",
    "load_policy",
    "load_settings",
    "make_engine",
    "open_node",
]
