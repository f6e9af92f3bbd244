"""The company's node: imports its records, answers pooled queries with DP releases only.

Raw records never leave the node; every release is charged to the node's privacy budget
before it is returned. Depends on :mod:`protocols` (and :mod:`synthetic`), never on
:mod:`coordinator`.
"""

from node._aggregate import ComputedRelease, compute_release
from node._api import create_app
from node._budget import BudgetStatus, budget_status
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
from node._ingest import IngestReport, ingest_file
from node._mapping import Mapping, load_mapping
from node._policy import BudgetPolicy, Policy, ReleasePolicy, check_query, load_policy
from node._release import answer_query
from node._settings import NodeSettings, load_settings
from node._summary import DataSummary, data_summary

__all__ = [
    "BudgetExceededError",
    "BudgetPolicy",
    "BudgetStatus",
    "ComputedRelease",
    "DataSummary",
    "IngestError",
    "IngestProblem",
    "IngestReport",
    "Mapping",
    "NodeConfigError",
    "NodeContext",
    "NodeError",
    "NodeSettings",
    "Policy",
    "QueryRefusedError",
    "ReleasePolicy",
    "answer_query",
    "budget_status",
    "check_query",
    "compute_release",
    "create_app",
    "create_schema",
    "data_summary",
    "ingest_file",
    "init_node",
    "load_mapping",
    "load_policy",
    "load_settings",
    "make_engine",
    "open_node",
]
