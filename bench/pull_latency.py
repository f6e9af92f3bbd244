"""Entry ``pull_latency``: pooled query latency and coordinator CPU, pull mode against push mode.

The real coordinator (``coordinator.create_app`` on a SQLite home made by
``coordinator.init_coordinator``) runs under uvicorn in a child process on 127.0.0.1, so its CPU
time can be read from ``/proc/<pid>/stat``. Simulated nodes answer every job with a
precomputed, correctly signed answer, so what is measured is the protocol, not the DP
computation:

* **pull**: N nodes, each with its own Ed25519 key, enrolled through the real enrolment API
  with one-time tokens, run in one child process as asyncio tasks, each with its own
  ``httpx.AsyncClient`` (as the real agent has). Each long-polls ``/v1/jobs/poll`` with a
  signed POLL envelope, verifies the JOB envelope against the coordinator's pinned key, posts a
  signed RESULT envelope and verifies the ACK, then polls again.
* **push**: the same number of nodes served by one uvicorn child process listening on one port
  of 127.0.0.1 per node (``GET /v1/info``, ``POST /v1/queries`` with the bearer-token check),
  enrolled with ``POST /v1/nodes`` (``allow_push``); the coordinator sends them the query by URL.

The children are forked from the benchmark process (``multiprocessing``, ``fork``) once it has
imported everything: a fresh interpreter spends about 3 s importing ``protocols`` (OpenDP).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import hmac
import io
import multiprocessing
import os
import random
import signal
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from bench._harness import Benchmark, Column, EntryResult, RunConfig, Table
from node._settings import NodeSettings
from protocols import (
    API_VERSION,
    COORDINATOR_ID,
    AggregateQuery,
    Bounds,
    Commodity,
    CoverageEntry,
    Dimension,
    EnrolBody,
    EnrolledBody,
    Flow,
    InMemoryLedger,
    JobSpec,
    MessageKind,
    NodeAnswer,
    NodeInfo,
    PollBody,
    PrivacyCost,
    QueryKind,
    ResultBody,
    SignedAnswer,
    SignedEnvelope,
    Stage,
    key_id,
    open_envelope,
    public_key_b64,
    seal_envelope,
    sign,
)

__all__ = [
    "BENCHMARK",
    "FULL_IN_PROCESS",
    "FULL_SIZES",
    "QUICK_IN_PROCESS",
    "QUICK_SIZES",
    "Counters",
    "HttpResults",
    "InProcessResult",
    "ModeResult",
    "PushNodesApp",
    "QuerySample",
    "SimNode",
    "Size",
    "SizeResult",
    "findings",
    "in_process_pull",
    "in_process_push",
    "make_nodes",
    "make_query",
    "measure",
    "measure_in_process",
    "result_tables",
    "run",
]
V = f"/{API_VERSION}"
#: Path of the instrumentation counters the coordinator child adds to its app.
COUNTERS_PATH = "/bench/counters"
#: How long a simulated pull node's poll waits: the real node's default ``poll_wait_seconds``.
POLL_WAIT_SECONDS = float(NodeSettings.model_fields["poll_wait_seconds"].default)
#: Deadline of a benchmarked query, and how long the operator's POST waits for its result.
QUERY_DEADLINE_SECONDS = 150.0
QUERY_WAIT_SECONDS = 120.0
#: Bounds on setting things up (per step).
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 3.0
ENROL_WORKERS = 8
COUNTRIES = ("COD", "IDN", "ZMB")
FLOWS = (Flow.PRODUCTION, Flow.EXPORT)
RELEASED_AT = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Size:
    """One size measured over HTTP: nodes, timed queries per mode (after warm-up), and, for a
    size where pull mode may not finish at all, a short deadline for its pull queries (which
    then run without warm-up, and count as failed if they miss it)."""

    nodes: int
    repeats: int
    warmup: int = 1
    pull_attempt_deadline: float | None = None


#: Over HTTP. At 1,000 nodes the coordinators are warm from the smaller sizes (same processes)
#: and pull queries get a short deadline: on a loaded 2-core machine they can miss any deadline.
FULL_SIZES = (Size(10, 5), Size(100, 5), Size(1000, 2, warmup=0, pull_attempt_deadline=45.0))
QUICK_SIZES = (Size(5, 2), Size(20, 2))
#: In process, without HTTP (coordinator functions called one node after the other).
FULL_IN_PROCESS = (100, 1000)
QUICK_IN_PROCESS = (20,)
IN_PROCESS_WARMUP = 5  # nodes of the discarded warm-up round before the in-process counts
#: How long the idle coordinator's CPU is measured, per size and mode.
IDLE_SECONDS = 3.0
QUICK_IDLE_SECONDS = 1.5


# --- the query and the simulated nodes ------------------------------------------------------


def make_query(query_id: str) -> AggregateQuery:
    """The benchmarked query: cobalt production and exports of 2024 in 3 countries (6 cells)."""
    return AggregateQuery(
        query_id=query_id,
        kind=QueryKind.SUM,
        commodities=[Commodity.COBALT],
        flows=list(FLOWS),
        periods=["2024"],
        countries=list(COUNTRIES),
        group_by=[Dimension.COUNTRY, Dimension.FLOW],
        epsilon=0.5,
        bounds=Bounds(record_clip=1000.0, unit_sum_bound=5000.0),
        purpose="benchmark of pooled query latency (pull vs push)",
    )


def query_ids(rng: random.Random, count: int) -> list[str]:
    """``count`` fresh query ids (32 lower-case hex digits) from ``rng``."""
    return [f"{rng.getrandbits(128):032x}" for _ in range(count)]


@dataclass(frozen=True)
class SimNode:
    """A simulated node: an id, an Ed25519 key (raw 32-byte seed) and a push access token."""

    node_id: str
    index: int
    seed: bytes
    access_token: str

    @functools.cached_property
    def key(self) -> Ed25519PrivateKey:
        """The node's signing key."""
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @functools.cached_property
    def public_key(self) -> str:
        """Base64 public key."""
        return public_key_b64(self.key)

    @functools.cached_property
    def key_id(self) -> str:
        """Fingerprint of the public key."""
        return key_id(self.public_key)

    @functools.cached_property
    def ledger(self) -> InMemoryLedger:
        """The node's ledger (in memory): every answer carries its receipt, as a node's does."""
        return InMemoryLedger(self.key, self.node_id, self.key_id)

    def answer(self, query: AggregateQuery) -> SignedAnswer:
        """A fixed answer to ``query`` (no data, no noise), signed like a real release."""
        cells = query.cell_count()
        answer = NodeAnswer(
            query_id=query.query_id, node_id=self.node_id, kind=query.kind,
            measure=query.measure, group_by=list(query.group_by),
            sums=[float(100 * (self.index % 7 + 1) + cell) for cell in range(cells)],
            sum_scale=query.bounds.unit_sum_bound / query.epsilon, epsilon=query.epsilon,
            accounting_periods=query.accounting_periods(),
            mechanism="bench: precomputed answer, no data", privacy_unit="bench",
            coverage=[CoverageEntry(commodity=Commodity.COBALT, stages=[Stage.MINING],
                                    flows=list(query.flows),
                                    countries=list(query.countries or COUNTRIES))],
            released_at=RELEASED_AT,
        )
        payload = answer.model_dump(mode="json")
        receipt = self.ledger.record(query_id=query.query_id, payload=payload,
                                     cost=PrivacyCost(epsilon=query.epsilon),
                                     accounting_periods=query.accounting_periods(),
                                     recorded_at=RELEASED_AT)
        return SignedAnswer(answer=answer, signature=sign(self.key, payload),
                            key_id=self.key_id, receipt=receipt)

    def info(self) -> NodeInfo:
        """What the node serves at ``GET /v1/info`` (push mode)."""
        return NodeInfo(node_id=self.node_id, display_name=f"bench node {self.index}",
                        public_key=self.public_key, key_id=self.key_id,
                        allowed_commodities=[Commodity.COBALT])

    def spec(self) -> dict[str, Any]:
        """JSON form, to hand the node to a child process."""
        return {"node_id": self.node_id, "index": self.index, "seed": self.seed.hex(),
                "access_token": self.access_token}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> SimNode:
        """Inverse of :meth:`spec`."""
        return cls(node_id=spec["node_id"], index=int(spec["index"]),
                   seed=bytes.fromhex(spec["seed"]), access_token=spec["access_token"])


def make_nodes(count: int, *, prefix: str, seed: int) -> list[SimNode]:
    """``count`` nodes ``<prefix>-0000``, ... with keys and tokens drawn from ``seed``."""
    rng = random.Random(f"{prefix}:{seed}")
    return [SimNode(node_id=f"{prefix}-{i:04d}", index=i, seed=rng.randbytes(32),
                    access_token=rng.randbytes(32).hex()) for i in range(count)]


# --- child process: the instrumented coordinator ----------------------------------------------

#: Coordinator functions wrapped with CPU and wall-time counters in the coordinator child:
#: (module, attribute, counter id). Wrapping rebinds the module attribute, which is where the
#: callers look the function up at call time.
INSTRUMENTED: tuple[tuple[str, str, str], ...] = (
    ("coordinator._api", "submit_query", "submit_query"),
    ("coordinator._api", "open_from_node", "open_from_node"),
    ("coordinator._envelopes", "open_envelope", "open_envelope"),
    ("protocols._envelope", "verify", "verify"),
    ("coordinator._api", "next_job", "next_job"),
    ("coordinator._api", "seal_for_node", "seal_for_node"),
    ("coordinator._api", "record_result", "record_result_pull"),
    ("coordinator._queries", "record_result", "record_result_push"),
    ("coordinator._jobs", "check_answer", "check_answer"),
    ("coordinator._jobs", "finalize_query", "finalize_after_answer"),
    ("coordinator._queries", "deliver_jobs", "deliver_jobs"),
    ("coordinator._queries", "node_addresses", "node_addresses"),
    ("coordinator._fanout", "check_answer", "fanout_check_answer"),
    ("coordinator._queries", "finalize_query", "finalize_wait"),
    ("coordinator._queries", "query_result", "query_result"),
    ("coordinator._api", "finalize_query", "finalize_loop"),
    ("coordinator._api", "due_queries", "due_queries"),
)
NONCE_COUNTER = "nonce_store"
FAN_OUT_COUNTER = "fan_out"
#: The snapshot's clock: ``[0, process CPU seconds (all threads), monotonic seconds]`` of the
#: coordinator process when it took the snapshot.
CLOCK = "_clock"


class Counters:
    """Calls, thread CPU seconds and wall seconds per counter id (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, list[float]] = {}

    def add(self, name: str, cpu: float, wall: float) -> None:
        with self._lock:
            entry = self._data.setdefault(name, [0.0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += cpu
            entry[2] += wall

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` counting its calls, thread CPU time and wall time under ``name``."""
        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.thread_time() - cpu, time.perf_counter() - wall)
        return counted

    def wrap_async(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Coroutine function ``fn`` counted like :meth:`wrap`; its CPU is the calling
        thread's (the event loop's) while it runs, so it includes other tasks run meanwhile."""
        @functools.wraps(fn)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            cpu, wall = time.thread_time(), time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.add(name, time.thread_time() - cpu, time.perf_counter() - wall)
        return counted

    def snapshot(self) -> dict[str, list[float]]:
        """``{id: [calls, cpu_s, wall_s]}`` so far, and :data:`CLOCK`."""
        with self._lock:
            data = {name: list(values) for name, values in self._data.items()}
        data[CLOCK] = [0.0, time.process_time(), time.monotonic()]
        return data


def instrument_coordinator() -> Counters:
    """Wrap the :data:`INSTRUMENTED` functions (and the nonce store) with counters."""
    import importlib

    counters = Counters()
    for module_name, attribute, name in INSTRUMENTED:
        module = importlib.import_module(module_name)
        setattr(module, attribute, counters.wrap(name, getattr(module, attribute)))
    envelopes = importlib.import_module("coordinator._envelopes")
    original = envelopes.nonce_store

    def nonce_store(*args: Any, **kwargs: Any) -> Callable[..., bool]:
        return counters.wrap(NONCE_COUNTER, original(*args, **kwargs))

    envelopes.nonce_store = nonce_store
    queries = importlib.import_module("coordinator._queries")
    queries.fan_out = counters.wrap_async(FAN_OUT_COUNTER, queries.fan_out)
    return counters


def serve_coordinator(home: Path, port: int) -> None:
    """What ``dpn coordinator serve`` does (open, schema, app, uvicorn at log level info),
    with the coordinator's main functions wrapped in counters served at :data:`COUNTERS_PATH`.
    """
    import uvicorn

    counters = instrument_coordinator()
    from coordinator import create_app, create_schema, open_coordinator

    context = open_coordinator(home)
    create_schema(engine=context.engine)
    app = create_app(context)
    app.add_api_route(COUNTERS_PATH, counters.snapshot, methods=["GET"])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info")


# --- child process: simulated pull nodes ------------------------------------------------------


@dataclass
class PullStats:
    """What the simulated pull nodes did (sent back when the child stops)."""

    polls: int = 0
    jobs: int = 0
    results: int = 0
    errors: int = 0
    last_error: str = ""


class _PullNode:
    """One simulated pull node: long-poll, verify the JOB, post the signed RESULT, verify ACK."""

    def __init__(self, node: SimNode, *, base: str, coordinator_key: str, wait: float,
                 answers: dict[str, SignedAnswer], stats: PullStats) -> None:
        self.node, self.base, self.coordinator_key = node, base, coordinator_key
        self.wait, self.answers, self.stats = wait, answers, stats
        self._nonces: set[str] = set()

    def _remember(self, _sender: str, nonce: str, _stamped_at: datetime) -> bool:
        if nonce in self._nonces:
            return False
        self._nonces.add(nonce)
        return True

    def _seal(self, kind: MessageKind, body: dict[str, Any]) -> dict[str, Any]:
        return seal_envelope(self.node.key, sender=self.node.node_id, recipient=COORDINATOR_ID,
                             kind=kind, body=body).model_dump(mode="json")

    def _open(self, response: httpx.Response, kind: MessageKind) -> dict[str, Any]:
        signed = SignedEnvelope.model_validate_json(response.content)
        return open_envelope(signed, public_key=self.coordinator_key,
                             recipient=self.node.node_id, kinds={kind},
                             remember_nonce=self._remember).body

    async def step(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            f"{self.base}/jobs/poll", timeout=self.wait + 15,
            json=self._seal(MessageKind.POLL, PollBody(wait_seconds=self.wait).model_dump()))
        self.stats.polls += 1
        if response.status_code == 204:
            return
        if response.status_code != 200:
            raise RuntimeError(f"poll: HTTP {response.status_code}: {response.text[:200]}")
        job = JobSpec.model_validate(self._open(response, MessageKind.JOB))
        self.stats.jobs += 1
        answer = self.answers.get(job.query.query_id) or self.node.answer(job.query)
        body = ResultBody(job_id=job.job_id, answer=answer).model_dump(mode="json")
        response = await client.post(f"{self.base}/jobs/result", timeout=30.0,
                                     json=self._seal(MessageKind.RESULT, body))
        if response.status_code != 200:
            raise RuntimeError(f"result: HTTP {response.status_code}: {response.text[:200]}")
        self._open(response, MessageKind.ACK)
        self.stats.results += 1

    async def run(self, client: httpx.AsyncClient) -> None:
        while True:
            try:
                await self.step(client)
            except (httpx.HTTPError, RuntimeError, ValidationError, ValueError) as exc:
                self.stats.errors += 1
                self.stats.last_error = f"{self.node.node_id}: {type(exc).__name__}: {exc}"[:500]
                await asyncio.sleep(0.5)


async def run_pull_nodes(conn: Connection) -> PullStats:
    """Run pull nodes: each message on ``conn`` adds nodes; SIGTERM or SIGINT stops them all.

    A message holds ``coordinator_url``, ``coordinator_public_key``, ``wait_seconds``,
    ``nodes`` (:meth:`SimNode.spec`) and ``queries`` (whose answers are precomputed).
    """
    stats = PullStats()
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_event.set)
    # Plain HTTP on loopback: one context shared by every client instead of one CA load each.
    tls = ssl.create_default_context()
    clients: list[httpx.AsyncClient] = []
    tasks: list[asyncio.Task[None]] = []

    def add_nodes() -> None:
        try:
            spec = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            stop_event.set()
            return
        queries = [AggregateQuery.model_validate(q) for q in spec["queries"]]
        for node_spec in spec["nodes"]:
            node = SimNode.from_spec(node_spec)
            sim = _PullNode(node, base=f"{spec['coordinator_url']}{V}",
                            coordinator_key=spec["coordinator_public_key"],
                            wait=float(spec["wait_seconds"]),
                            answers={q.query_id: node.answer(q) for q in queries}, stats=stats)
            clients.append(httpx.AsyncClient(verify=tls))
            tasks.append(asyncio.create_task(sim.run(clients[-1])))

    loop.add_reader(conn.fileno(), add_nodes)
    try:
        await stop_event.wait()
    finally:
        with suppress(ValueError, OSError):
            loop.remove_reader(conn.fileno())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)
    return stats


def pull_nodes_main(conn: Connection) -> None:
    """Child process: run the pull nodes sent on ``conn``; send back the stats when stopped."""
    stats = asyncio.run(run_pull_nodes(conn))
    conn.send(stats.__dict__)


# --- child process: simulated push nodes ------------------------------------------------------


@dataclass
class _PushNode:
    bearer: bytes
    info: bytes
    answers: dict[str, bytes]
    sim: SimNode


class PushNodesApp:
    """A raw ASGI app answering as the node whose port the connection came in on."""

    def __init__(self, by_port: Mapping[int, _PushNode]) -> None:
        self.by_port = by_port

    @staticmethod
    async def _send(send: Callable[..., Any], status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any],
                       send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        server = scope.get("server")
        node = self.by_port.get(server[1]) if server else None
        path, method = scope["path"], scope["method"]
        if node is None:
            await self._send(send, 404, b'{"error":"not_found"}')
        elif path == f"{V}/health":
            await self._send(send, 200, b'{"status":"ok"}')
        elif path == f"{V}/info" and method == "GET":
            await self._send(send, 200, node.info)
        elif path == f"{V}/queries" and method == "POST":
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            headers = dict(scope["headers"])
            if not hmac.compare_digest(headers.get(b"authorization", b""), node.bearer):
                await self._send(send, 401, b'{"error":"unauthorized","message":"token"}')
                return
            try:
                query = AggregateQuery.model_validate_json(b"".join(chunks))
            except ValidationError:
                await self._send(send, 422, b'{"error":"invalid_request","message":"query"}')
                return
            answer = node.answers.get(query.query_id)
            if answer is None:
                answer = node.sim.answer(query).model_dump_json().encode()
            await self._send(send, 200, answer)
        else:
            await self._send(send, 404, b'{"error":"not_found"}')


def push_nodes_main(conn: Connection, nodes: Sequence[SimNode],
                    queries: Sequence[AggregateQuery]) -> None:
    """Child process: bind one port per node, send the ports on ``conn``, serve until SIGTERM."""
    import uvicorn

    sockets, by_port = [], {}
    for node in nodes:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sockets.append(sock)
        by_port[sock.getsockname()[1]] = _PushNode(
            bearer=f"Bearer {node.access_token}".encode(),
            info=node.info().model_dump_json().encode(),
            answers={q.query_id: node.answer(q).model_dump_json().encode() for q in queries},
            sim=node)
    conn.send([s.getsockname()[1] for s in sockets])
    config = uvicorn.Config(PushNodesApp(by_port), log_level="warning", lifespan="off",
                            access_log=False)
    uvicorn.Server(config).run(sockets=sockets)


# --- the bench side: processes ----------------------------------------------------------------


class BenchError(RuntimeError):
    """Something the benchmark needs did not happen in time (the message says what)."""


_FORK = multiprocessing.get_context("fork")
_PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent exits


@dataclass
class Child:
    """A forked child process of the benchmark, its log and its end of a pipe."""

    name: str
    process: BaseProcess
    log_path: Path
    conn: Connection | None = None
    url: str = ""
    stopped: bool = False

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        if not self.process.is_alive():
            raise BenchError(f"{self.name} exited with code {self.process.exitcode}; "
                             f"log {self.log_path}:\n{self.log_tail()}")

    def receive(self, timeout: float) -> Any:
        """The next message from the child (raises :class:`BenchError` after ``timeout``)."""
        assert self.conn is not None
        deadline = time.monotonic() + timeout
        while not self.conn.poll(0.2):
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} sent nothing within {timeout:.0f} s")
        return self.conn.recv()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child_main(target: Callable[..., None], log_path: Path, *args: Any) -> None:
    """In the forked child: stdout and stderr to the log, default signals, terminated with
    the benchmark process even if that one is killed (Linux), run ``target``."""
    with suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    target(*args)


def spawn(name: str, target: Callable[..., None], *args: Any, log_dir: Path, url: str = "",
          pipe: bool = False) -> Child:
    """Fork a child running ``target(*args)`` (``target(conn, *args)`` with ``pipe``)."""
    log_path = log_dir / f"{name}.log"
    parent_end = child_end = None
    if pipe:
        parent_end, child_end = _FORK.Pipe()
        args = (child_end, *args)
    process = _FORK.Process(target=_child_main, args=(target, log_path, *args), name=name,
                            daemon=True)
    process.start()
    if child_end is not None:
        child_end.close()
    return Child(name, process, log_path, parent_end, url)


def stop(child: Child, grace: float = STOP_TIMEOUT_SECONDS) -> Any:
    """Terminate ``child`` (kill after ``grace`` seconds); return its last message on the pipe,
    if any."""
    if child.stopped:
        return None
    child.stopped = True
    process, message = child.process, None
    try:
        if process.is_alive():
            process.terminate()
            process.join(grace)
        if process.is_alive():
            process.kill()
            process.join(STOP_TIMEOUT_SECONDS)
        if child.conn is not None:
            with suppress(EOFError, OSError):
                if child.conn.poll(0):
                    message = child.conn.recv()
    finally:
        if child.conn is not None:
            child.conn.close()
        with suppress(ValueError):
            process.close()
    return message


def wait_healthy(child: Child, timeout: float = START_TIMEOUT_SECONDS) -> None:
    """Wait until ``child.url`` answers ``/v1/health``."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            child.check_alive()
            with suppress(httpx.HTTPError):
                if client.get(f"{child.url}{V}/health").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"{child.name} not healthy within {timeout:.0f} s; log:\n"
                                 f"{child.log_tail()}")
            time.sleep(0.1)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all threads), from /proc."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


# --- the bench side: talking to the coordinator -----------------------------------------------


@dataclass
class Coordinator:
    """A coordinator child process and an operator client for it."""

    child: Child
    token: str
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.child.url, timeout=60.0,
                                   headers={"Authorization": f"Bearer {self.token}"})

    def close(self) -> None:
        self.client.close()

    def counters(self) -> dict[str, list[float]]:
        response = self.client.get(COUNTERS_PATH)
        response.raise_for_status()
        return dict(response.json())

    def public_key(self) -> str:
        return str(self.client.get(f"{V}/info").json()["public_key"])

    def enrol_pull(self, node: SimNode, coordinator_key: str) -> None:
        """Enrol ``node`` as the real node does: one-time token, signed ENROL, pinned key."""
        response = self.client.post(f"{V}/enrolment-tokens", json={"node_id": node.node_id})
        response.raise_for_status()
        body = EnrolBody(token=response.json()["token"], node_id=node.node_id,
                         display_name=f"bench node {node.index}", public_key=node.public_key)
        signed = seal_envelope(node.key, sender=node.node_id, recipient=COORDINATOR_ID,
                               kind=MessageKind.ENROL, body=body.model_dump(mode="json"))
        response = self.client.post(f"{V}/enrol", json=signed.model_dump(mode="json"))
        if response.status_code != 200:
            raise BenchError(f"enrolment of {node.node_id} refused: {response.text[:300]}")
        envelope = open_envelope(SignedEnvelope.model_validate_json(response.content),
                                 public_key=coordinator_key, recipient=node.node_id,
                                 kinds={MessageKind.ENROLLED}, remember_nonce=lambda *_: True)
        if EnrolledBody.model_validate(envelope.body).coordinator_public_key != coordinator_key:
            raise BenchError("the coordinator's key changed during enrolment")

    def enrol_push(self, node: SimNode, url: str) -> None:
        """Enrol ``node`` by URL (push mode), confirming its key id."""
        response = self.client.post(f"{V}/nodes", json={
            "url": url, "access_token": node.access_token, "expected_key_id": node.key_id})
        if response.status_code != 200:
            raise BenchError(f"push enrolment of {node.node_id} refused: {response.text[:300]}")

    def wait_polling(self, count: int, timeout: float) -> None:
        """Wait until ``count`` nodes have been seen (their first poll was opened)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            self.child.check_alive()
            nodes = self.client.get(f"{V}/nodes").json()
            seen = sum(1 for n in nodes if n.get("last_seen_at"))
            if seen >= count:
                return
            time.sleep(0.2)
        raise BenchError(f"only {seen} of {count} pull nodes polled within {timeout:.0f} s")


def start_coordinator(home: Path, *, log_dir: Path, allow_push: bool, name: str
                      ) -> Coordinator:
    """Create a coordinator home (SQLite) and start the instrumented coordinator on it."""
    from coordinator import init_coordinator

    port = _free_port()
    context = init_coordinator(home=home, port=port, allow_push=allow_push)
    token = context.settings.operator_token.get_secret_value()
    context.engine.dispose()
    child = spawn(name, serve_coordinator, home, port, log_dir=log_dir,
                  url=f"http://127.0.0.1:{port}")
    return Coordinator(child, token)


def _parallel(fn: Callable[[SimNode], None], nodes: Sequence[SimNode]) -> None:
    with ThreadPoolExecutor(max_workers=ENROL_WORKERS) as pool:
        for future in [pool.submit(fn, node) for node in nodes]:
            future.result(timeout=START_TIMEOUT_SECONDS)


# --- measuring over HTTP ----------------------------------------------------------------------


@dataclass(frozen=True)
class QuerySample:
    """One pooled query as measured."""

    status: str
    answered: int
    response_s: float  # operator's POST /v1/queries until the finished result came back
    completion_s: float  # created_at -> finished_at, as the coordinator recorded them
    coordinator_cpu_s: float
    nodes_cpu_s: float
    counters: dict[str, list[float]]


def _delta(after: Mapping[str, list[float]], before: Mapping[str, list[float]]
           ) -> dict[str, list[float]]:
    return {name: [a - b for a, b in zip(values, before.get(name, [0.0, 0.0, 0.0]),
                                         strict=True)]
            for name, values in after.items()}


def _timestamp(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_query(coordinator: Coordinator, query: AggregateQuery, *, quorum: int,
              nodes_pid: int, deadline: float = QUERY_DEADLINE_SECONDS) -> QuerySample:
    """Submit ``query`` (the POST waits for its result) and measure it until it is finished."""
    before = coordinator.counters()
    cpu, node_cpu = cpu_seconds(coordinator.child.pid), cpu_seconds(nodes_pid)
    start = time.perf_counter()
    response = coordinator.client.post(f"{V}/queries", timeout=QUERY_WAIT_SECONDS + 30, json={
        "query": query.model_dump(mode="json"), "quorum": quorum,
        "deadline_seconds": deadline, "wait_seconds": QUERY_WAIT_SECONDS})
    if response.status_code != 200:
        raise BenchError(f"query refused: HTTP {response.status_code}: {response.text[:300]}")
    result = response.json()
    give_up = time.monotonic() + deadline + 30
    while result["status"] not in ("completed", "failed"):
        if time.monotonic() > give_up:
            raise BenchError(f"query {query.query_id} not finished {deadline + 30:.0f} s "
                             f"after its deadline; log {coordinator.child.log_path}")
        result = coordinator.client.get(f"{V}/queries/{query.query_id}",
                                        params={"wait_seconds": 5.0}).json()
    response_s = time.perf_counter() - start
    cpu = cpu_seconds(coordinator.child.pid) - cpu
    node_cpu = cpu_seconds(nodes_pid) - node_cpu
    counters = _delta(coordinator.counters(), before)
    completion = (_timestamp(result["finished_at"])
                  - _timestamp(result["created_at"])).total_seconds()
    answered = sum(1 for n in result["nodes"] if n["status"] == "answered")
    return QuerySample(result["status"], answered, response_s, completion, cpu, node_cpu,
                       counters)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class ModeResult:
    """One mode at one size over HTTP: the timed queries and the idle coordinator's CPU."""

    mode: str
    nodes: int
    samples: tuple[QuerySample, ...]
    idle_cpu_per_s: float  # coordinator CPU seconds per wall second, nodes waiting, no query
    idle_counters: dict[str, list[float]]  # per wall second
    deadline_s: float = QUERY_DEADLINE_SECONDS

    @property
    def complete(self) -> tuple[QuerySample, ...]:
        """The samples that completed with every node's answer."""
        return tuple(s for s in self.samples
                     if s.status == "completed" and s.answered == self.nodes)

    @property
    def all_complete(self) -> bool:
        return bool(self.samples) and len(self.complete) == len(self.samples)

    def median(self, attribute: str) -> float | None:
        """Median of ``attribute`` over the completed samples (latency of a failed query is
        its deadline, not a latency); CPU medians over every sample."""
        samples = self.complete if attribute in ("response_s", "completion_s") else self.samples
        return _median([getattr(s, attribute) for s in samples])

    def counters_per_query(self) -> dict[str, list[float]]:
        """Counter deltas averaged over the timed queries."""
        total: dict[str, list[float]] = {}
        for sample in self.samples:
            for name, values in sample.counters.items():
                entry = total.setdefault(name, [0.0, 0.0, 0.0])
                for i, value in enumerate(values):
                    entry[i] += value
        return {name: [v / len(self.samples) for v in values] for name, values in total.items()}

    def row(self) -> dict[str, Any]:
        cpu = self.median("coordinator_cpu_s")
        answered = _median([s.answered for s in self.samples])
        return {
            "nodes": self.nodes, "mode": self.mode, "queries": len(self.samples),
            "completed": f"{len(self.complete)}/{len(self.samples)}",
            "answered": None if answered is None else f"{answered:,.0f}/{self.nodes:,}",
            "deadline_s": self.deadline_s,
            "response_s": self.median("response_s"),
            "completion_s": self.median("completion_s"),
            "cpu_s": cpu, "cpu_ms_per_node": None if cpu is None else 1000 * cpu / self.nodes,
            "nodes_cpu_s": self.median("nodes_cpu_s"),
            "idle_cpu": self.idle_cpu_per_s,
            "idle_ms_per_node": 1000 * self.idle_cpu_per_s / self.nodes,
        }


@dataclass(frozen=True)
class SizeResult:
    """Both modes at one size over HTTP."""

    nodes: int
    pull: ModeResult
    push: ModeResult

    def ratio(self, attribute: str) -> float | None:
        """pull / push of the medians of ``attribute`` (``None`` unless both modes completed)."""
        if not (self.pull.all_complete and self.push.all_complete):
            return None
        pull, push = self.pull.median(attribute), self.push.median(attribute)
        return pull / push if pull is not None and push else None

    def ratio_row(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "completion": self.ratio("completion_s"),
                "response": self.ratio("response_s"), "cpu": self.ratio("coordinator_cpu_s")}


def _idle(coordinator: Coordinator, seconds: float) -> tuple[float, dict[str, list[float]]]:
    """Coordinator CPU seconds per second, and counters per second, while nothing is asked
    (both from the coordinator's own snapshots, so over the same window)."""
    before = coordinator.counters()
    time.sleep(seconds)
    delta = _delta(coordinator.counters(), before)
    _, cpu, wall = delta.pop(CLOCK)
    return cpu / wall, {name: [v / wall for v in values] for name, values in delta.items()}


def _settle_seconds(nodes: int) -> float:
    """Pause before each query so every node is back in its long poll (and the log flushed)."""
    return 0.5 + nodes / 500


def _queries(coordinator: Coordinator, queries: Sequence[AggregateQuery], *, nodes: int,
             warmup: int, nodes_pid: int, deadline: float) -> tuple[QuerySample, ...]:
    samples = []
    for i, query in enumerate(queries):
        time.sleep(_settle_seconds(nodes))
        sample = run_query(coordinator, query, quorum=nodes, nodes_pid=nodes_pid,
                           deadline=deadline)
        if i >= warmup:
            samples.append(sample)
    return tuple(samples)


@dataclass(frozen=True)
class Plan:
    """The queries of one size, per mode (warm-up first)."""

    pull: tuple[AggregateQuery, ...]
    push: tuple[AggregateQuery, ...]


def plan_queries(sizes: Sequence[Size], seed: int) -> dict[int, Plan]:
    """Fresh queries per size and mode, drawn from ``seed``."""
    rng = random.Random(seed)
    plans = {}
    for size in sizes:
        count = size.warmup + size.repeats
        pulls = size.repeats if size.pull_attempt_deadline is not None else count
        plans[size.nodes] = Plan(tuple(make_query(q) for q in query_ids(rng, pulls)),
                                 tuple(make_query(q) for q in query_ids(rng, count)))
    return plans


@dataclass
class Rig:
    """What runs during a measurement: a coordinator per mode and the simulated nodes."""

    pull: Coordinator
    push: Coordinator
    agents: Child  # the simulated pull nodes
    push_server: Child  # the simulated push nodes, one port each
    push_ports: list[int]
    pull_nodes: list[SimNode]
    push_nodes: list[SimNode]
    enrolled_pull: int = 0
    enrolled_push: int = 0


@contextmanager
def start_rig(max_nodes: int, push_queries: Sequence[AggregateQuery], *, workdir: Path,
              seed: int) -> Iterator[Rig]:
    """Start both coordinators and both node simulators at once, before any client opens a
    socket (they are forked); stop every one of them on exit, whatever happened."""
    pull_nodes = make_nodes(max_nodes, prefix="pull", seed=seed)
    push_nodes = make_nodes(max_nodes, prefix="push", seed=seed)
    with ExitStack() as stack:
        server = spawn("push-nodes", push_nodes_main, push_nodes, push_queries,
                       log_dir=workdir, pipe=True)
        stack.callback(stop, server)
        pull = start_coordinator(workdir / "pull-home", log_dir=workdir, allow_push=False,
                                 name="coordinator-pull")
        # No graceful shutdown: it would wait for the parked polls to end.
        stack.callback(stop, pull.child, 1.0)
        stack.callback(pull.close)
        push = start_coordinator(workdir / "push-home", log_dir=workdir, allow_push=True,
                                 name="coordinator-push")
        stack.callback(stop, push.child, 1.0)
        stack.callback(push.close)
        agents = spawn("pull-nodes", pull_nodes_main, log_dir=workdir, pipe=True)
        stack.callback(stop, agents)  # first to stop: its polls hold the pull coordinator
        ports = [int(p) for p in server.receive(START_TIMEOUT_SECONDS)]
        server.url = f"http://127.0.0.1:{ports[0]}"
        for child in (server, pull.child, push.child):
            wait_healthy(child)
        yield Rig(pull, push, agents, server, ports, pull_nodes, push_nodes)


def measure_push(rig: Rig, size: Size, queries: Sequence[AggregateQuery], *,
                 idle_seconds: float) -> ModeResult:
    """Enrol push nodes up to ``size.nodes`` by URL, then measure idle CPU and the queries."""
    added = rig.push_nodes[rig.enrolled_push:size.nodes]
    _parallel(lambda n: rig.push.enrol_push(n, f"http://127.0.0.1:{rig.push_ports[n.index]}"),
              added)
    rig.enrolled_push = size.nodes
    time.sleep(_settle_seconds(size.nodes))
    idle, idle_counters = _idle(rig.push, idle_seconds)
    samples = _queries(rig.push, queries, nodes=size.nodes, warmup=size.warmup,
                       nodes_pid=rig.push_server.pid, deadline=QUERY_DEADLINE_SECONDS)
    return ModeResult("push", size.nodes, samples, idle, idle_counters)


def measure_pull(rig: Rig, size: Size, queries: Sequence[AggregateQuery], *,
                 idle_seconds: float) -> ModeResult:
    """Enrol pull nodes up to ``size.nodes`` with tokens, start their agents, wait until all
    of them poll, then measure idle CPU and the queries."""
    added = rig.pull_nodes[rig.enrolled_pull:size.nodes]
    key = rig.pull.public_key()
    _parallel(lambda n: rig.pull.enrol_pull(n, key), added)
    assert rig.agents.conn is not None
    rig.agents.check_alive()
    rig.agents.conn.send({
        "coordinator_url": rig.pull.child.url, "coordinator_public_key": key,
        "wait_seconds": POLL_WAIT_SECONDS, "nodes": [n.spec() for n in added],
        "queries": [q.model_dump(mode="json") for q in queries]})
    rig.enrolled_pull = size.nodes
    rig.pull.wait_polling(size.nodes, START_TIMEOUT_SECONDS + size.nodes / 10)
    time.sleep(_settle_seconds(size.nodes))
    idle, idle_counters = _idle(rig.pull, idle_seconds)
    attempt = size.pull_attempt_deadline
    deadline = QUERY_DEADLINE_SECONDS if attempt is None else attempt
    samples = _queries(rig.pull, queries, nodes=size.nodes,
                       warmup=size.warmup if attempt is None else 0,
                       nodes_pid=rig.agents.pid, deadline=deadline)
    return ModeResult("pull", size.nodes, samples, idle, idle_counters, deadline)


@contextmanager
def _workdir(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix="dpn-bench-pull-") as name:
        yield Path(name)


@dataclass(frozen=True)
class HttpResults:
    """Every size over HTTP, and what the simulated pull nodes counted."""

    sizes: list[SizeResult]
    agent_stats: dict[str, Any]


def measure(sizes: Sequence[Size], *, seed: int, idle_seconds: float,
            workdir: Path | None = None) -> HttpResults:
    """Push at every size, then pull at every size (nodes added between sizes).

    Push first: push coordinators have no background load, pull ones do (parked polls).
    """
    plans = plan_queries(sizes, seed)
    with _workdir(workdir) as root, start_rig(
            max(s.nodes for s in sizes), [q for p in plans.values() for q in p.push],
            workdir=root, seed=seed) as rig:
        push = [measure_push(rig, s, plans[s.nodes].push, idle_seconds=idle_seconds)
                for s in sizes]
        pull = [measure_pull(rig, s, plans[s.nodes].pull, idle_seconds=idle_seconds)
                for s in sizes]
        stats = stop(rig.agents) or {}
    return HttpResults([SizeResult(s.nodes, a, b) for s, a, b in zip(sizes, pull, push,
                                                                     strict=True)], stats)


# --- in process, without HTTP -----------------------------------------------------------------


class _Steps:
    """Thread CPU and wall time of coordinator calls, by step."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall = 0.0

    def __call__(self, step: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.cpu[step] = self.cpu.get(step, 0.0) + time.thread_time() - cpu
            self.wall += time.perf_counter() - wall


@dataclass(frozen=True)
class InProcessResult:
    """One query's coordinator work with N nodes, calls made one node after the other."""

    nodes: int
    mode: str
    status: str
    answered: int
    cpu_s: float  # thread CPU of the coordinator calls
    wall_s: float  # their wall time, one after the other
    steps: dict[str, float]  # CPU seconds per step
    idle_recheck_cpu_s: float | None = None  # pull: one re-check by every parked poll

    def row(self) -> dict[str, Any]:
        per_node = {f"step_{name}": 1000 * cpu / self.nodes for name, cpu in self.steps.items()}
        return {"nodes": self.nodes, "mode": self.mode,
                "answered": f"{self.answered:,}/{self.nodes:,} ({self.status})",
                "cpu_s": self.cpu_s, "wall_s": self.wall_s,
                "cpu_ms_per_node": 1000 * self.cpu_s / self.nodes,
                "idle_recheck": self.idle_recheck_cpu_s, **per_node}


def _node_side_result(node: SimNode, signed_job: SignedEnvelope, coordinator_key: str,
                      answer: SignedAnswer) -> SignedEnvelope:
    """What the node does between JOB and RESULT: verify the JOB, seal the signed answer."""
    body = open_envelope(signed_job, public_key=coordinator_key, recipient=node.node_id,
                         kinds={MessageKind.JOB}, remember_nonce=lambda *_: True).body
    job = JobSpec.model_validate(body)
    return seal_envelope(node.key, sender=node.node_id, recipient=COORDINATOR_ID,
                         kind=MessageKind.RESULT,
                         body=ResultBody(job_id=job.job_id, answer=answer).model_dump(mode="json"))


def in_process_pull(count: int, *, home: Path, seed: int) -> InProcessResult:
    """Pull mode without HTTP: per node, what the routes call for one query (open the POLL,
    ``next_job``, seal the JOB; open the RESULT, ``record_result``, seal the ACK), then what
    ``wait_for_result`` calls. The node side is done in between, untimed."""
    from coordinator import (
        enrol_with_token,
        finalize_query,
        init_coordinator,
        issue_enrolment_token,
        next_job,
        query_result,
        record_result,
        submit_query,
    )
    from coordinator._envelopes import open_from_node, seal_for_node

    nodes = make_nodes(count, prefix="pull", seed=seed)
    query = make_query(query_ids(random.Random(seed), 1)[0])
    context = init_coordinator(home=home)
    try:
        for node in nodes:
            token, _ = issue_enrolment_token(context=context, node_id=node.node_id)
            body = EnrolBody(token=token, node_id=node.node_id, display_name=node.node_id,
                             public_key=node.public_key).model_dump(mode="json")
            enrol_with_token(context=context, signed=seal_envelope(
                node.key, sender=node.node_id, recipient=COORDINATOR_ID,
                kind=MessageKind.ENROL, body=body))
        answers = {node.node_id: node.answer(query) for node in nodes}
        polls = [seal_envelope(node.key, sender=node.node_id, recipient=COORDINATOR_ID,
                               kind=MessageKind.POLL,
                               body=PollBody(wait_seconds=POLL_WAIT_SECONDS).model_dump())
                 for node in nodes]
        steps, engine = _Steps(), context.engine
        for poll in polls:  # every node's poll is parked when the query arrives
            steps("envelopes", open_from_node, context, poll, {MessageKind.POLL})
        steps("submit", submit_query, engine=engine, query=query, quorum=count,
              deadline_seconds=QUERY_DEADLINE_SECONDS)
        for node in nodes:
            job = steps("next_job", next_job, engine=engine, node_id=node.node_id)
            signed_job = steps("envelopes", seal_for_node, context, node.node_id,
                               MessageKind.JOB, job.model_dump(mode="json"))
            result = _node_side_result(node, signed_job, context.public_key,
                                       answers[node.node_id])
            row, envelope = steps("envelopes", open_from_node, context, result,
                                  {MessageKind.RESULT})
            body = steps("envelopes", ResultBody.model_validate, envelope.body)
            steps("record_result", record_result, engine=engine, node_id=node.node_id,
                  public_key=row.public_key, job_id=body.job_id, answer=body.answer)
            steps("envelopes", seal_for_node, context, node.node_id, MessageKind.ACK,
                  {"job_id": body.job_id, "duplicate": False})
        steps("finalize", finalize_query, engine=engine, query_id=query.query_id)
        result = steps("finalize", query_result, engine=engine, query_id=query.query_id)
        cpu = time.thread_time()
        for node in nodes:  # the parked polls' periodic re-check, once each
            next_job(engine=engine, node_id=node.node_id)
        idle = time.thread_time() - cpu
    finally:
        context.engine.dispose()
    return InProcessResult(count, "pull", result.status, len(result.answered),
                           sum(steps.cpu.values()), steps.wall, steps.cpu, idle)


def in_process_push(count: int, *, home: Path, seed: int) -> InProcessResult:
    """Push mode without network: what ``POST /v1/queries`` calls (``submit_query``,
    ``deliver_jobs``, ``node_addresses``, ``fan_out`` with an ``httpx.MockTransport`` that
    answers as the nodes, ``record_result`` per answer), then what ``wait_for_result`` calls."""
    from sqlmodel import Session

    from coordinator import (
        fan_out,
        finalize_query,
        init_coordinator,
        node_addresses,
        query_result,
        record_result,
        submit_query,
    )
    from coordinator._db import NodeRow
    from coordinator._jobs import deliver_jobs

    nodes = make_nodes(count, prefix="push", seed=seed)
    query = make_query(query_ids(random.Random(seed + 1), 1)[0])
    answers = {f"{node.node_id}.bench.invalid": node.answer(query).model_dump_json().encode()
               for node in nodes}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=answers[request.url.host],
                              headers={"content-type": "application/json"})

    context = init_coordinator(home=home, allow_push=True)
    try:
        with Session(context.engine) as session:
            for node in nodes:
                session.add(NodeRow(node_id=node.node_id, display_name=node.node_id,
                                    public_key=node.public_key, key_id=node.key_id,
                                    transport="push", url=f"http://{node.node_id}.bench.invalid",
                                    access_token=node.access_token))
            session.commit()
        steps, engine = _Steps(), context.engine
        steps("submit", submit_query, engine=engine, query=query, quorum=count,
              deadline_seconds=QUERY_DEADLINE_SECONDS)
        specs = steps("deliver", deliver_jobs, engine=engine, query_id=query.query_id,
                      node_ids={node.node_id for node in nodes})
        addresses = steps("deliver", node_addresses, engine=engine, node_ids=list(specs))
        keys = {a.node_id: a.public_key for a in addresses}
        outcomes = steps("fan_out", asyncio.run, fan_out(
            nodes=addresses, query=query, timeout=30.0,
            transport=httpx.MockTransport(answer)))
        for outcome in outcomes:
            assert outcome.signed is not None, outcome.message
            steps("record_result", record_result, engine=engine, node_id=outcome.node_id,
                  public_key=keys[outcome.node_id], job_id=specs[outcome.node_id].job_id,
                  answer=outcome.signed)
        steps("finalize", finalize_query, engine=engine, query_id=query.query_id)
        result = steps("finalize", query_result, engine=engine, query_id=query.query_id)
    finally:
        context.engine.dispose()
    return InProcessResult(count, "push", result.status, len(result.answered),
                           sum(steps.cpu.values()), steps.wall, steps.cpu)


def measure_in_process(counts: Sequence[int], *, seed: int, workdir: Path | None = None
                       ) -> list[InProcessResult]:
    """Both modes in process at every count (a fresh coordinator home each), after a small
    warm-up round of each (imports, SQLAlchemy's statement caches)."""
    results = []
    with _workdir(workdir) as root:
        in_process_pull(IN_PROCESS_WARMUP, home=root / "inproc-warmup-pull", seed=seed)
        in_process_push(IN_PROCESS_WARMUP, home=root / "inproc-warmup-push", seed=seed)
        for count in counts:
            results.append(in_process_pull(count, home=root / f"inproc-pull-{count}", seed=seed))
            results.append(in_process_push(count, home=root / f"inproc-push-{count}", seed=seed))
    return results


# --- the report -----------------------------------------------------------------------------

RESULT_COLUMNS = (
    Column("nodes", "nodes", ",d"),
    Column("mode", "mode", numeric=False),
    Column("queries", "timed queries", "d"),
    Column("completed", "completed", numeric=False),
    Column("answered", "answers (median)", numeric=False),
    Column("deadline_s", "deadline s", ".0f"),
    Column("completion_s", "completion s (server)", ".3f"),
    Column("response_s", "response s (client)", ".3f"),
    Column("cpu_s", "coordinator CPU s / query", ".2f"),
    Column("cpu_ms_per_node", "coordinator CPU ms / node", ",.1f"),
    Column("nodes_cpu_s", "simulated nodes' CPU s / query", ".2f"),
    Column("idle_cpu", "idle coordinator CPU s / s", ".3f"),
    Column("idle_ms_per_node", "idle CPU ms / s / node", ".2f"),
)
RATIO_COLUMNS = (
    Column("nodes", "nodes", ",d"),
    Column("completion", "pull / push: completion", ".2f"),
    Column("response", "pull / push: response", ".2f"),
    Column("cpu", "pull / push: coordinator CPU", ".2f"),
)
#: Steps of the in-process simulation (ms of CPU per node).
IN_PROCESS_STEPS = (
    ("envelopes", "envelopes (open POLL + RESULT, seal JOB + ACK)"),
    ("next_job", "`next_job`"),
    ("deliver", "`deliver_jobs` + `node_addresses`"),
    ("fan_out", "`fan_out` (mock transport)"),
    ("record_result", "`record_result`"),
    ("submit", "`submit_query`"),
    ("finalize", "`finalize_query` + `query_result`"),
)
IN_PROCESS_COLUMNS = (
    Column("nodes", "nodes", ",d"),
    Column("mode", "mode", numeric=False),
    Column("answered", "answers", numeric=False),
    Column("cpu_s", "coordinator CPU s / query", ".2f"),
    Column("wall_s", "wall s / query (sequential)", ".2f"),
    Column("cpu_ms_per_node", "CPU ms / node", ".2f"),
    *(Column(f"step_{name}", f"of which {label}, ms / node", ".2f")
      for name, label in IN_PROCESS_STEPS),
    Column("idle_recheck", "one re-check of every parked poll, CPU s", ".3f"),
)
PROFILE_COLUMNS = (
    Column("stage", "coordinator function", numeric=False),
    Column("mode", "mode", numeric=False),
    Column("calls", "calls / query", ",.0f"),
    Column("cpu_ms", "CPU ms / query", ",.1f"),
    Column("wall_ms", "wall ms / query (summed over threads)", ",.1f"),
    Column("share", "% of coordinator CPU", ".1f"),
)
#: Counter ids in report order, their labels, and whether they are part of the row above
#: (nested rows are not added to the total).
STAGES: tuple[tuple[str, str, bool], ...] = (
    ("submit_query", "`submit_query`: store the query, one job per node", False),
    ("open_from_node", "`open_from_node`: check a node's envelope, update last_seen", False),
    ("open_envelope", "  of which `open_envelope` (verify, freshness, nonce)", True),
    ("verify", "  of which Ed25519 `verify` of the envelope", True),
    (NONCE_COUNTER, "  of which nonce store (DELETE expired, INSERT, commit)", True),
    ("next_job", "`next_job`: a poll looks for its job (on wake-up, and every 1 s)", False),
    ("seal_for_node", "`seal_for_node`: sign the JOB / ACK envelope", False),
    ("record_result_pull", "`record_result` of a RESULT envelope (pull)", False),
    ("record_result_push", "`record_result` after the fan-out (push)", False),
    ("check_answer", "  of which `check_answer` (verify the node's answer)", True),
    ("finalize_after_answer", "  of which `finalize_query` after each answer", True),
    ("deliver_jobs", "`deliver_jobs`: mark push jobs delivered", False),
    ("node_addresses", "`node_addresses`: push nodes' URLs", False),
    (FAN_OUT_COUNTER, "`fan_out`: the HTTP requests to the push nodes (event-loop CPU while "
                      "it runs)", False),
    ("fanout_check_answer", "  of which `check_answer` of each answer", True),
    ("finalize_wait", "`finalize_query` in `wait_for_result` (every 0.25 s)", False),
    ("query_result", "`query_result`: load the result", False),
    ("finalize_loop", "`finalize_query` + `due_queries` of the deadline loop", False),
)
OTHER = "not in these functions: HTTP server (h11), routing, validation, access log, event loop"
TOTAL = "coordinator process CPU between the two snapshots"


def profile_rows(mode: ModeResult) -> list[dict[str, Any]]:
    """Per query of ``mode``: calls, CPU and wall time per instrumented coordinator function."""
    counters = mode.counters_per_query()
    clock = counters.pop(CLOCK, None)  # the snapshots' window: consistent with the counters
    cpu_total = clock[1] if clock else statistics.mean(s.coordinator_cpu_s
                                                       for s in mode.samples)
    loop = [a + b for a, b in zip(counters.pop("finalize_loop", [0.0] * 3),
                                  counters.pop("due_queries", [0.0] * 3), strict=True)]
    counters["finalize_loop"] = loop
    rows, top_level_cpu = [], 0.0
    for name, label, nested in STAGES:
        values = counters.get(name)
        if values is None or values[0] == 0:
            continue
        calls, cpu, wall = values
        if not nested:
            top_level_cpu += cpu
        rows.append({"stage": label, "mode": mode.mode, "calls": calls, "cpu_ms": 1000 * cpu,
                     "wall_ms": 1000 * wall,
                     "share": 100 * cpu / cpu_total if cpu_total else None})
    other = max(cpu_total - top_level_cpu, 0.0)
    rows.append({"stage": OTHER, "mode": mode.mode, "cpu_ms": 1000 * other,
                 "share": 100 * other / cpu_total if cpu_total else None})
    rows.append({"stage": TOTAL, "mode": mode.mode, "cpu_ms": 1000 * cpu_total,
                 "share": 100.0 if cpu_total else None})
    return rows


def _profiled(results: Sequence[SizeResult]) -> list[ModeResult]:
    """Modes to profile: both at the largest size where both completed, and any larger push
    size that completed."""
    both = [r for r in results if r.pull.all_complete and r.push.all_complete]
    chosen = [both[-1].pull, both[-1].push] if both else []
    largest = both[-1].nodes if both else 0
    chosen += [r.push for r in results if r.nodes > largest and r.push.all_complete]
    return chosen


def result_tables(http: HttpResults, in_process: Sequence[InProcessResult]) -> list[Table]:
    """The entry's tables."""
    results = http.sizes
    tables = [
        Table(RESULT_COLUMNS, [m.row() for r in results for m in (r.pull, r.push)],
              title="Over HTTP: latency and coordinator CPU per pooled query (medians)"),
        Table(RATIO_COLUMNS, [r.ratio_row() for r in results],
              title="Over HTTP: pull against push, same run (ratio of medians)"),
    ]
    if in_process:
        tables.append(Table(IN_PROCESS_COLUMNS, [r.row() for r in in_process],
                            title="In process, no HTTP: the coordinator's functions for one "
                                  "query, node after node"))
    for mode in _profiled(results):
        tables.append(Table(PROFILE_COLUMNS, profile_rows(mode),
                            title=f"Over HTTP: where the coordinator's CPU goes, {mode.mode} "
                                  f"mode, {mode.nodes:,} nodes (mean per timed query)"))
    return tables


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _per_query(mode: ModeResult, name: str) -> tuple[float, float, float]:
    calls, cpu, wall = mode.counters_per_query().get(name, [0.0, 0.0, 0.0])
    return calls, cpu, wall


def _profile_cpu(mode: ModeResult) -> float:
    clock = mode.counters_per_query().get(CLOCK)
    return clock[1] if clock else statistics.mean(s.coordinator_cpu_s for s in mode.samples)


def _result_note(results: Sequence[SizeResult]) -> str:
    parts = []
    for r in results:
        pull, push = r.pull, r.push
        if pull.all_complete and push.all_complete:
            parts.append(
                f"{r.nodes:,} nodes: pull {_fmt(pull.median('completion_s'), '.2f')} s vs push "
                f"{_fmt(push.median('completion_s'), '.2f')} s "
                f"({_fmt(r.ratio('completion_s'), '.1f')}x), coordinator CPU "
                f"{_fmt(pull.row()['cpu_ms_per_node'], '.1f')} vs "
                f"{_fmt(push.row()['cpu_ms_per_node'], '.1f')} ms per node")
            continue
        for mode in (pull, push):
            if mode.all_complete:
                parts.append(f"{r.nodes:,} nodes, {mode.mode}: "
                             f"{_fmt(mode.median('completion_s'), '.2f')} s, "
                             f"{_fmt(mode.row()['cpu_ms_per_node'], '.1f')} ms CPU per node")
            else:
                parts.append(
                    f"{r.nodes:,} nodes, {mode.mode}: {len(mode.complete)} of "
                    f"{len(mode.samples)} queries completed, median {mode.row()['answered']} "
                    f"answers by the {mode.deadline_s:.0f} s deadline")
    return "**Result.** " + "; ".join(parts) + "."


def _idle_note(results: Sequence[SizeResult]) -> str:
    largest = results[-1]
    calls, cpu, _ = largest.pull.idle_counters.get("next_job", [0.0, 0.0, 0.0])
    return (
        f"**Parked pull polls cost the coordinator CPU.** With {largest.nodes:,} nodes waiting "
        f"in their long polls and no query, the coordinator used "
        f"{largest.pull.idle_cpu_per_s:.2f} CPU s per second "
        f"({1000 * largest.pull.idle_cpu_per_s / largest.nodes:.2f} ms per node per second), "
        f"{1000 * cpu:,.0f} ms of it in {calls:,.0f} calls of `next_job` per second: every "
        "waiting poll re-checks the database each second (`JobNotifier.wait_for_job`, "
        "`recheck_seconds=1.0`), on the event loop. The push coordinator idles at "
        f"{largest.push.idle_cpu_per_s:.3f} CPU s per second.")


def _pull_note(size: SizeResult) -> str:
    mode, n = size.pull, size.nodes
    total = _profile_cpu(mode)
    opened = _per_query(mode, "open_from_node")
    nonce = _per_query(mode, NONCE_COUNTER)
    polled = _per_query(mode, "next_job")
    recorded = _per_query(mode, "record_result_pull")
    finalized = _per_query(mode, "finalize_after_answer")

    def share(values: tuple[float, float, float]) -> str:
        return f"{100 * values[1] / total:.0f}%" if total else "–"

    def each(values: tuple[float, float, float]) -> str:
        return f"{1000 * values[1] / values[0]:.1f}" if values[0] else "–"

    return (
        f"**Where pull mode's coordinator CPU goes ({n:,} nodes, over HTTP).** Per query: "
        f"{opened[0]:,.0f} node envelopes opened (`open_from_node`, {each(opened)} ms CPU each, "
        f"{share(opened)} of the coordinator's CPU: signature, a nonce row written and the "
        f"expired ones deleted, `last_seen_at` written, two commits); {polled[0]:,.0f} "
        f"`next_job` calls for {n:,} jobs ({each(polled)} ms each, {share(polled)}); "
        f"{recorded[0]:,.0f} `record_result` ({each(recorded)} ms each, {share(recorded)}), of "
        f"which `finalize_query` {each(finalized)} ms: it loads every job of the query after "
        f"each answer. The wall time of `open_from_node` summed to {opened[2]:.1f} s against "
        f"{opened[1]:.2f} s of CPU ({nonce[2]:.1f} s of it in the nonce store): polls run it on "
        "the event loop, results in the thread pool, and they queue for SQLite's write lock "
        "(and fsync).")


def _push_note(results: Sequence[SizeResult]) -> str | None:
    complete = [r for r in results if r.push.all_complete]
    if not complete:
        return None
    large = complete[-1]
    total = _profile_cpu(large.push)
    fan = _per_query(large.push, FAN_OUT_COUNTER)
    finals = [(r.nodes, _per_query(r.push, "finalize_after_answer")) for r in complete]
    growth = ", ".join(f"{1000 * v[1] / v[0]:.2f} ms at {n:,} nodes"
                       for n, v in finals if v[0]) or "–"
    fan_share = f"{100 * fan[1] / total:.0f}%" if total else "–"
    return (
        f"**Push mode at {large.nodes:,} nodes.** `fan_out` took {fan[1]:.1f} s of the event "
        f"loop's CPU per query ({fan_share} of the coordinator's), {fan[2]:.1f} s of wall time. "
        "It sends every request at once through one `httpx.AsyncClient`, whose pool allows 100 "
        "connections; httpcore re-scans every queued request against every connection whenever "
        "a request starts or ends, which is quadratic in the number of nodes (the in-process "
        "rows go through a mock transport, without that pool). Then `record_result` runs once "
        "per node, on the event loop, each followed by a `finalize_query` that loads all the "
        f"query's jobs: {growth} per answer.")


def _in_process_note(in_process: Sequence[InProcessResult]) -> str:
    def per_node(result: InProcessResult, step: str | None = None) -> float:
        cpu = result.cpu_s if step is None else result.steps.get(step, 0.0)
        return 1000 * cpu / result.nodes

    parts = []
    for count in sorted({r.nodes for r in in_process}):
        by_mode = {r.mode: r for r in in_process if r.nodes == count}
        pull, push = by_mode.get("pull"), by_mode.get("push")
        if pull is None or push is None:
            continue
        parts.append(
            f"{count:,} nodes: pull {pull.cpu_s:.2f} s CPU per query ({per_node(pull):.1f} ms "
            f"per node), push {push.cpu_s:.2f} s ({per_node(push):.1f} ms), "
            f"{per_node(pull) / per_node(push):.1f}x")
    text = "; ".join(parts)
    pulls = sorted((r for r in in_process if r.mode == "pull"), key=lambda r: r.nodes)
    if len(pulls) > 1:
        small, large = pulls[0], pulls[-1]
        text += (
            f". From {small.nodes:,} to {large.nodes:,} nodes `record_result` took "
            f"{per_node(small, 'record_result'):.1f} and {per_node(large, 'record_result'):.1f} "
            "ms per node in pull mode (each answer's `finalize_query` reads every job of the "
            "query)")
    return ("**In process (no HTTP, no concurrency): a lower bound on the coordinator's work.** "
            f"{text}. Pull mode's extra work per node: two envelopes opened (signature, nonce "
            "row, `last_seen_at`), two sealed, and `next_job`.")


def findings(http: HttpResults, in_process: Sequence[InProcessResult]) -> list[str]:
    """Markdown notes on the measured values."""
    results = http.sizes
    notes = [_result_note(results), _idle_note(results)]
    both = [r for r in results if r.pull.all_complete and r.push.all_complete]
    if both:
        notes.append(_pull_note(both[-1]))
    push = _push_note(results)
    if push:
        notes.append(push)
    if in_process:
        notes.append(_in_process_note(in_process))
    errors = int(http.agent_stats.get("errors", 0) or 0)
    if errors:
        notes.append(f"The simulated pull nodes saw {errors:,} failed requests over the run "
                     f"(last: {http.agent_stats.get('last_error', '')!s:.200}); they retry "
                     "after 0.5 s.")
    return notes


def run(config: RunConfig) -> EntryResult:
    sizes = QUICK_SIZES if config.quick else FULL_SIZES
    counts = QUICK_IN_PROCESS if config.quick else FULL_IN_PROCESS
    http = measure(sizes, seed=config.seed,
                   idle_seconds=QUICK_IDLE_SECONDS if config.quick else IDLE_SECONDS)
    in_process = measure_in_process(counts, seed=config.seed)
    return EntryResult(tables=result_tables(http, in_process),
                       notes=findings(http, in_process))


_ATTEMPT = next(s for s in FULL_SIZES if s.pull_attempt_deadline is not None)
DESCRIPTION = f"""
What it measures: the latency of one pooled query, from the operator's `POST /v1/queries`
(quorum = every node) until its result is completed, and the coordinator's CPU time for it,
with {", ".join(f"{s.nodes:,}" for s in FULL_SIZES)} nodes in **pull** mode (nodes behind
firewalls long-poll the coordinator) and in **push** mode (the coordinator sends the query to
each node by URL), in the same run. Quick mode:
{", ".join(str(s.nodes) for s in QUICK_SIZES)} nodes over HTTP,
{", ".join(str(n) for n in QUICK_IN_PROCESS)} in process.

Set-up (`bench/pull_latency.py`), all on 127.0.0.1:

- **The coordinator** is the real application: `coordinator.create_app` on a home made by
  `coordinator.init_coordinator` (SQLite, WAL), served by uvicorn in a child process as
  `dpn coordinator serve` does (log level info: one access-log line per request). One
  coordinator per mode for all sizes (nodes are added between sizes, as a pool grows; the job
  table keeps earlier queries). Its main functions are wrapped with counters (calls, thread
  CPU time, wall time) for the profile tables. The child processes are forked from the
  benchmark process after its imports (a fresh interpreter spends about 3 s importing OpenDP).
- **Pull**: simulated nodes, each with its own Ed25519 key, enrolled through the real API
  (the operator issues a one-time token, the node posts a signed ENROL envelope and pins the
  coordinator's key), run as asyncio tasks in one child process, each with its own
  `httpx.AsyncClient` as the real agent. Each long-polls `/v1/jobs/poll` with a signed POLL
  envelope (`wait_seconds` {POLL_WAIT_SECONDS:g}, the node's default), verifies the JOB envelope
  against the pinned key, posts a signed RESULT envelope and verifies the ACK, then polls again.
  Queries start once every node has polled.
- **Push**: simulated nodes served by one uvicorn child process listening on one port of
  127.0.0.1 per node (the coordinator's enrolment accepts no URL path): `GET /v1/info`,
  `POST /v1/queries` with the bearer-token check and query validation. Enrolled with
  `POST /v1/nodes` (`allow_push`, key id confirmed).
- Every node answers with a precomputed, correctly signed answer (sums over the query's public
  keys), so the DP computation is not measured, only the protocol. The query: sum of cobalt
  quantity, 2024, {len(COUNTRIES)} countries x {len(FLOWS)} flows ({len(COUNTRIES) * len(FLOWS)}
  cells).
- **{_ATTEMPT.nodes:,} pull nodes over HTTP** are at the limit of this machine: one uvicorn
  process on 2 shared cores holds {_ATTEMPT.nodes:,} parked long polls, each re-checking the
  database every second, next to the simulated nodes' process. Whether a query then finishes
  depends on the machine's other load, so pull queries at that size run without warm-up and
  with a {_ATTEMPT.pull_attempt_deadline:.0f} s deadline; one that misses it counts as failed
  and is reported with the number of answers that arrived by then.
- What the coordinator's code costs per node without HTTP, concurrency or lock contention is
  measured **in process** at {", ".join(f"{n:,}" for n in FULL_IN_PROCESS)} nodes (labelled as
  such): its functions are called directly, node after node, as the routes call them (pull:
  open the POLL envelope, `next_job`, seal the JOB; open the RESULT, `record_result`, seal the
  ACK; push: `submit_query`, `deliver_jobs`, `node_addresses`, `fan_out` through an
  `httpx.MockTransport` that answers as the nodes, `record_result` per answer), then
  `finalize_query` and `query_result`; the node's side is done in between, untimed. A lower
  bound on the coordinator's work per query.

How to read it:

- **completion s (server)**: `finished_at - created_at` of the query as the coordinator
  recorded them: from the query being stored until the last answer was pooled.
  **response s (client)**: the operator's `POST /v1/queries` (with `wait_seconds`) until the
  completed result came back; in pull mode it includes `wait_for_result`'s 0.25 s polling.
  Both are medians over the queries that completed with every answer.
- **coordinator CPU**: user + system CPU of the coordinator process (`/proc/<pid>/stat`,
  10 ms ticks, all threads) during the operator's request; per node = divided by N. In pull
  mode it includes what the parked polls cost meanwhile (see idle).
- **simulated nodes' CPU**: the child process running the simulated nodes (pull agents, or the
  push-node server). It shares the machine's cores with the coordinator, so at large N it
  slows the coordinator down too; real nodes run elsewhere.
- **idle coordinator CPU**: CPU seconds per second of the coordinator with its nodes enrolled
  (pull: all parked in their long polls) and no query running, from the coordinator's own
  snapshots (`time.process_time`) over {IDLE_SECONDS:g} s.
- Medians of the timed queries after {FULL_SIZES[0].warmup} warm-up query per mode (none at
  {_ATTEMPT.nodes:,} nodes: the coordinators are warm from the smaller sizes), with a pause of
  0.5 s + N / 500 s before each query so every pull node is back in its poll. Push runs at
  every size first, then pull: a pull coordinator's parked polls load the machine, a push
  coordinator's idle does not.
- **pull / push** ratios only where both modes completed every query.
- The profile tables: per timed query over HTTP, calls and CPU / wall time of the
  coordinator's functions (thread CPU time inside each call; "of which" rows are part of the
  row above). Wall time is summed over concurrent calls, so far above CPU time means waiting:
  for SQLite's write lock (requests in the thread pool and on the event loop write at the same
  time) or for fsync. CPU in no listed function is the framework's. The window is between the
  coordinator's own counter snapshots taken just before and after the query, so its total is
  a little above the CPU column of the first table. `fan_out` is a coroutine: its row is the
  event loop's CPU while it runs (in push mode nothing else runs then but the deadline loop).
"""

BENCHMARK = Benchmark(
    name="pull_latency",
    title="Pooled query latency and coordinator CPU: pull mode vs push mode",
    description=DESCRIPTION,
    run=run,
)
