"""The company's node: imports its records, answers pooled queries with DP releases only.

Raw records never leave the node; every release is charged to the node's privacy budget
before it is returned. In pull mode the node only connects out: its agent polls the
coordinator for jobs, which the node owner's policy answers automatically or holds for
approval. Depends on :mod:`protocols` (and :mod:`synthetic`), never on
:mod:`coordinator`.
"""

from node._agent import CoordinatorError, PullAgent
from node._aggregate import ComputedRelease, compute_release
from node._api import create_app
from node._budget import (
    RESERVATION_TIMEOUT,
    BudgetStatus,
    ReservationLostError,
    account_spend,
    budget_status,
    recover_reservations,
)
from node._db import create_schema, make_engine
from node._enrolment import (
    CoordinatorUnreachableError,
    Enrolment,
    EnrolmentRefusedError,
    enrol,
    load_enrolment,
    rotate_key,
)
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
from node._jobs import (
    JobNotFoundError,
    approve_job,
    deny_job,
    list_jobs,
    receive_job,
    run_job,
)
from node._ledger import ReleaseOrigin, export_ledger, ledger_entries
from node._mapping import Mapping, load_mapping
from node._peer_keys import PeerKey, pinned_peer_keys, trust_peer
from node._policy import (
    ApprovalPolicy,
    ApprovalRule,
    BudgetPolicy,
    Policy,
    ReleasePolicy,
    check_query,
    load_policy,
)
from node._release import answer_query
from node._secure import SecureRoundsMemory, check_secure_query, handle_secagg_job
from node._settings import NodeSettings, load_settings
from node._storage import storage_failure
from node._summary import DataSummary, agent_status, data_summary

__all__ = [
    "RESERVATION_TIMEOUT",
    "ApprovalPolicy",
    "ApprovalRule",
    "BudgetExceededError",
    "BudgetPolicy",
    "BudgetStatus",
    "ComputedRelease",
    "CoordinatorError",
    "CoordinatorUnreachableError",
    "DataSummary",
    "Enrolment",
    "EnrolmentRefusedError",
    "IngestError",
    "IngestProblem",
    "IngestReport",
    "JobNotFoundError",
    "Mapping",
    "NodeConfigError",
    "NodeContext",
    "NodeError",
    "NodeSettings",
    "PeerKey",
    "Policy",
    "PullAgent",
    "QueryRefusedError",
    "ReleaseOrigin",
    "ReleasePolicy",
    "ReservationLostError",
    "SecureRoundsMemory",
    "account_spend",
    "agent_status",
    "answer_query",
    "approve_job",
    "budget_status",
    "check_query",
    "check_secure_query",
    "compute_release",
    "create_app",
    "create_schema",
    "data_summary",
    "deny_job",
    "enrol",
    "export_ledger",
    "handle_secagg_job",
    "ingest_file",
    "init_node",
    "ledger_entries",
    "list_jobs",
    "load_enrolment",
    "load_mapping",
    "load_policy",
    "load_settings",
    "make_engine",
    "open_node",
    "pinned_peer_keys",
    "receive_job",
    "recover_reservations",
    "rotate_key",
    "run_job",
    "storage_failure",
    "trust_peer",
]
