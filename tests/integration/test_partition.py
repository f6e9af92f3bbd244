"""A network partition between a pull-mode node and the coordinator, with a real link.

The node process runs in a network namespace of its own, joined to the host namespace (where
the coordinator process listens, on the host end's address) by a veth pair. The link is cut
(``ip link set <host end> down``) while a pooled query waits for the node, then restored:
the query then completes with the node's answer pooled, or (if its deadline passed) fails
cleanly; either way the node charged its budget at most once and its ledger holds at most
one entry for the query. With 300 ms of delay each way a query still completes; the delay is
made by a relay on the host end (:class:`DelayRelay`): ``tc netem`` needs the kernel's
``sch_netem``, which the test machine's kernel lacks.

Needs root (``ip netns``, veth pairs); without them the test fails, it is not skipped. Every
namespace and link made here is removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import node
from coordinator import TokenRequest, init_coordinator
from crimmis_dpn._client import CoordinatorClient
from crimmis_dpn._processes import (
    ServiceProcess,
    free_port,
    start_service,
    stop_services,
    wait_healthy,
)
from protocols import AggregateQuery, CoverageEntry
from tests.unit.node.conftest import insert_records, make_record

pytestmark = pytest.mark.processes

COVERAGE = [CoverageEntry(commodity="cobalt", stages=["mining"], flows=["production"],
                          countries=["COD"])]
EPSILON = 0.2


def sh(*args: str) -> None:
    """Run a setup command; fail the test with its error if it does not work."""
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=20)
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()} "
                    "-- this test needs root with ip netns and veth pairs")


def quiet(*args: str) -> None:
    subprocess.run(args, capture_output=True, check=False, timeout=20)


@dataclass
class Link:
    namespace: str
    host_end: str
    node_end: str
    host_address: str
    node_address: str

    def cut(self) -> None:
        """Take the host end down: nothing passes either way (the node end loses carrier)."""
        sh("ip", "link", "set", self.host_end, "down")

    def restore(self) -> None:
        sh("ip", "link", "set", self.host_end, "up")


class DelayRelay:
    """A TCP relay that holds every chunk ``delay`` seconds before passing it on, each way.

    Stands in for ``tc netem delay``, which this kernel may lack (``sch_netem``): the node
    reaches the coordinator through it, on the host end of the link.
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int], delay: float) -> None:
        self.listen, self.target, self.delay = listen, target, delay
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> DelayRelay:
        self._thread.start()
        assert self._ready.wait(10), "the relay did not start"
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._handle, *self.listen)
        self._ready.set()
        async with server:
            await self._stop.wait()
        for writer in list(self._writers):
            writer.close()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        with contextlib.suppress(OSError):
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        for end in (writer, up_writer):
            end.close()
            self._writers.discard(end)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(forward())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + self.delay, data))
        finally:
            queue.put_nowait((loop.time() + self.delay, b""))
            await sender


def _used_addresses() -> str:
    return subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True,
                          check=False).stdout


@pytest.fixture
def link() -> Iterator[Link]:
    """A namespace and a veth pair on a random 10.231.x.y/30; all removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    used = _used_addresses()
    while True:
        third, fourth = random.randrange(256), random.randrange(0, 256, 4)
        host, peer = f"10.231.{third}.{fourth + 1}", f"10.231.{third}.{fourth + 2}"
        if f"10.231.{third}." not in used:
            break
    made = Link(f"dpnpart-{tag}", f"dph{tag}", f"dpn{tag}", host, peer)
    try:
        sh("ip", "netns", "add", made.namespace)
        sh("ip", "link", "add", made.host_end, "type", "veth", "peer", "name", made.node_end)
        sh("ip", "link", "set", made.node_end, "netns", made.namespace)
        sh("ip", "addr", "add", f"{host}/30", "dev", made.host_end)
        sh("ip", "link", "set", made.host_end, "up")
        sh("ip", "-n", made.namespace, "addr", "add", f"{peer}/30", "dev", made.node_end)
        sh("ip", "-n", made.namespace, "link", "set", made.node_end, "up")
        sh("ip", "-n", made.namespace, "link", "set", "lo", "up")
        yield made
    finally:
        quiet("ip", "link", "del", made.host_end)  # deletes the peer too
        quiet("ip", "netns", "del", made.namespace)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                              check=False).stdout
        assert made.namespace not in left, f"namespace {made.namespace} not removed"


@dataclass
class Partitioned:
    link: Link
    client: CoordinatorClient
    node_home: Path
    node_service: ServiceProcess


@pytest.fixture
def pool(link: Link, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         request: pytest.FixtureRequest) -> Iterator[Partitioned]:
    """The coordinator on the host end of the link, the node in the namespace, enrolled.

    Parametrised indirectly with a delay (seconds), the node reaches the coordinator through
    a :class:`DelayRelay` on the host end instead.
    """
    delay: float | None = getattr(request, "param", None)
    monkeypatch.setenv("DPN_NODE_POLL_WAIT_SECONDS", "1")
    monkeypatch.setenv("DPN_NODE_MAX_BACKOFF_SECONDS", "1")
    logs = tmp_path / "logs"
    logs.mkdir()
    hub = init_coordinator(home=tmp_path / "coordinator", port=free_port())
    hub.engine.dispose()
    services: list[ServiceProcess] = []
    with contextlib.ExitStack() as stack:
        coordinator = start_service(
            "coordinator", ["coordinator", "serve", "--home", str(hub.home), "--host",
                            link.host_address],
            port=hub.settings.port, log_dir=logs, host=link.host_address)
        services.append(coordinator)
        stack.callback(stop_services, services)
        wait_healthy([coordinator])
        client = CoordinatorClient(coordinator.url,
                                   hub.settings.operator_token.get_secret_value(), timeout=60)
        stack.callback(client.close)
        node_url = coordinator.url
        if delay is not None:
            relay_port = free_port()
            stack.enter_context(DelayRelay((link.host_address, relay_port),
                                           (link.host_address, hub.settings.port), delay))
            node_url = f"http://{link.host_address}:{relay_port}"
        context = node.init_node(home=tmp_path / "miner", node_id="miner-a",
                                 display_name="Miner A", port=8701,
                                 policy=node.Policy(coverage=COVERAGE))
        insert_records(context, [make_record(f"r{i}", period=f"2024-{i % 12 + 1:02d}",
                                             quantity_t=100.0, unit=f"site:{i % 5}")
                                 for i in range(24)])
        token = client.enrolment_token(TokenRequest(node_id="miner-a"))
        node.enrol(context=context, coordinator_url=node_url, token=token.token,
                   expected_coordinator_key_id=hub.key_id)  # from the host: same address
        context.engine.dispose()
        node_service = start_service(
            "miner-a", ["node", "serve", "--home", str(context.home)], port=8701,
            log_dir=logs, prefix=["ip", "netns", "exec", link.namespace])
        services.append(node_service)
        deadline = time.monotonic() + 60
        while not client.nodes()[0].last_seen_at:  # the node polls from its namespace
            assert node_service.process.poll() is None, node_service.log_tail()
            assert time.monotonic() < deadline, node_service.log_tail()
            time.sleep(0.2)
        yield Partitioned(link, client, context.home, node_service)


def query() -> AggregateQuery:
    return AggregateQuery.model_validate({
        "query_id": uuid.uuid4().hex, "kind": "sum", "commodities": ["cobalt"],
        "flows": ["production"], "periods": ["2024"], "countries": ["COD"],
        "group_by": ["country"], "epsilon": EPSILON,
        "bounds": {"record_clip": 1000.0, "unit_sum_bound": 1000.0}, "purpose": "partition"})


def charged(home: Path, query_id: str) -> tuple[float, int]:
    """The node's budget spent in 2024 and its ledger entries for ``query_id`` (read from the
    host, on the node's SQLite file)."""
    context = node.open_node(home)
    try:
        spent = {b.year: b.spent for b in node.budget_status(
            engine=context.engine, epsilon_per_year=context.policy.budget.epsilon_per_year)}
        entries = [e for e in node.ledger_entries(engine=context.engine)
                   if e.query_id == query_id]
        return spent.get(2024, 0.0), len(entries)
    finally:
        context.engine.dispose()


def test_a_query_cut_off_by_a_partition_completes_after_the_link_is_restored(
    pool: Partitioned,
) -> None:
    q = query()
    pool.link.cut()  # the partition
    cut_at = time.monotonic()
    submitted = pool.client.query(q, quorum=1, deadline_seconds=30, wait_seconds=0)
    assert submitted.status in ("queued", "running")
    time.sleep(4)
    assert pool.client.result(q.query_id).status in ("queued", "running")  # still waiting
    assert charged(pool.node_home, q.query_id) == (0.0, 0)  # the job cannot have arrived
    pool.link.restore()
    restored_at = time.monotonic()

    result = pool.client.result(q.query_id, wait_seconds=45)
    finished_after = time.monotonic() - restored_at
    spent, entries = charged(pool.node_home, q.query_id)
    print(f"\npartition of {restored_at - cut_at:.1f} s: query {result.status} "
          f"{finished_after:.1f} s after the link was restored; node charged {spent}, "
          f"{entries} ledger entr{'y' if entries == 1 else 'ies'}")
    assert pool.node_service.process.poll() is None, pool.node_service.log_tail()
    assert result.status in ("completed", "failed"), result
    assert entries <= 1 and spent in (0.0, EPSILON)  # charged at most once
    if result.status == "completed":
        assert result.answered == ["miner-a"]
        assert (spent, entries) == (EPSILON, 1)
    else:  # the deadline passed: a clean failure, saying why
        assert result.error, result
    assert result.status == "completed", (  # 30 s deadline, 4 s partition: must recover
        f"the query did not complete after the link came back: {result.error}")


@pytest.mark.parametrize("pool", [0.3], indirect=True)  # 300 ms each way
def test_a_query_over_a_slow_link_completes(pool: Partitioned) -> None:
    q = query()
    started = time.monotonic()
    result = pool.client.query(q, quorum=1, deadline_seconds=40, wait_seconds=40)
    took = time.monotonic() - started
    print(f"\n300 ms each way (relay): query {result.status} in {took:.1f} s")
    assert result.status == "completed", result.error
    assert result.answered == ["miner-a"]
    assert charged(pool.node_home, q.query_id) == (EPSILON, 1)
