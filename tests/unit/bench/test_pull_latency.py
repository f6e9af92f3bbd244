"""The ``pull_latency`` entry without timing anything: the simulated nodes' answers and push
server, the coordinator instrumentation, the in-process rounds, the tables and notes, and one
tiny round over HTTP with real processes (2 nodes in each mode).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import pull_latency as pl
from bench.__main__ import BENCHMARKS
from bench._harness import markdown_table
from coordinator._verify import check_answer
from protocols import NodeInfo, SignedAnswer

# --- the simulated nodes ---------------------------------------------------------------------


def test_simulated_answers_verify_like_real_ones() -> None:
    query = pl.make_query("ab" * 16)
    for node in pl.make_nodes(3, prefix="pull", seed=7):
        signed = node.answer(query)
        check_answer(node_id=node.node_id, public_key=node.public_key, query=query,
                     signed=signed)
        assert signed.key_id == node.key_id
        assert signed.answer.sums is not None and len(signed.answer.sums) == 6


def test_a_simulated_answer_does_not_verify_for_another_node_or_query() -> None:
    one, two = pl.make_nodes(2, prefix="push", seed=7)
    query = pl.make_query("cd" * 16)
    with pytest.raises(ValueError, match="signature"):
        check_answer(node_id=one.node_id, public_key=two.public_key, query=query,
                     signed=one.answer(query))
    with pytest.raises(ValueError, match="another node or another query"):
        check_answer(node_id=one.node_id, public_key=one.public_key,
                     query=pl.make_query("ef" * 16), signed=one.answer(query))


def test_nodes_are_seeded_distinct_and_survive_their_spec() -> None:
    nodes = pl.make_nodes(4, prefix="pull", seed=1)
    assert [n.node_id for n in nodes] == ["pull-0000", "pull-0001", "pull-0002", "pull-0003"]
    assert len({n.public_key for n in nodes}) == 4
    assert [n.public_key for n in pl.make_nodes(4, prefix="pull", seed=1)] == \
        [n.public_key for n in nodes]
    assert pl.make_nodes(1, prefix="pull", seed=2)[0].public_key != nodes[0].public_key
    copy = pl.SimNode.from_spec(nodes[2].spec())
    assert (copy.node_id, copy.public_key, copy.access_token) == \
        (nodes[2].node_id, nodes[2].public_key, nodes[2].access_token)


def test_planned_queries_are_fresh_and_short_deadline_pulls_have_no_warmup() -> None:
    plans = pl.plan_queries([pl.Size(2, 3), pl.Size(5, 2, warmup=0, pull_attempt_deadline=9)],
                            seed=3)
    assert (len(plans[2].pull), len(plans[2].push)) == (4, 4)
    assert (len(plans[5].pull), len(plans[5].push)) == (2, 2)
    ids = [q.query_id for p in plans.values() for q in (*p.pull, *p.push)]
    assert len(set(ids)) == len(ids)


def _push_app(nodes: list[pl.SimNode], query: Any) -> pl.PushNodesApp:
    return pl.PushNodesApp({9000 + n.index: pl._PushNode(
        bearer=f"Bearer {n.access_token}".encode(), info=n.info().model_dump_json().encode(),
        answers={query.query_id: n.answer(query).model_dump_json().encode()}, sim=n)
        for n in nodes})


def test_push_node_server_answers_as_the_node_of_its_port() -> None:
    nodes = pl.make_nodes(2, prefix="push", seed=5)
    query, other = pl.make_query("12" * 16), pl.make_query("34" * 16)
    app = _push_app(nodes, query)

    async def exchange() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
            second = "http://127.0.0.1:9001/v1"
            auth = {"Authorization": f"Bearer {nodes[1].access_token}"}
            return [
                await client.get(f"{second}/info"),
                await client.post(f"{second}/queries", json=query.model_dump(mode="json"),
                                  headers=auth),
                await client.post(f"{second}/queries", json=other.model_dump(mode="json"),
                                  headers=auth),
                await client.post(f"{second}/queries", json=query.model_dump(mode="json"),
                                  headers={"Authorization": "Bearer wrong"}),
                await client.post(f"{second}/queries", json={"query_id": "x"}, headers=auth),
                await client.get("http://127.0.0.1:9005/v1/info"),
                await client.get(f"{second}/health"),
            ]

    info, answer, unplanned, wrong, invalid, unknown, health = asyncio.run(exchange())
    assert NodeInfo.model_validate_json(info.content).key_id == nodes[1].key_id
    for response, q in ((answer, query), (unplanned, other)):
        assert response.status_code == 200
        check_answer(node_id=nodes[1].node_id, public_key=nodes[1].public_key, query=q,
                     signed=SignedAnswer.model_validate_json(response.content))
    assert (wrong.status_code, invalid.status_code, unknown.status_code) == (401, 422, 404)
    assert health.json() == {"status": "ok"}


# --- instrumentation and processes ----------------------------------------------------------


def test_counters_count_calls_and_keep_results_and_errors() -> None:
    counters = pl.Counters()
    double = counters.wrap("double", lambda x: 2 * x)

    def fail() -> None:
        raise KeyError("no")

    failing = counters.wrap("fail", fail)
    assert double(3) == 6 and double(4) == 8
    with pytest.raises(KeyError):
        failing()
    snapshot = counters.snapshot()
    assert snapshot["double"][0] == 2 and snapshot["fail"][0] == 1
    assert all(cpu >= 0 and wall >= 0 for _, cpu, wall in snapshot.values())


def test_every_instrumented_coordinator_function_exists() -> None:
    import importlib

    for module, attribute, _ in pl.INSTRUMENTED:
        assert callable(getattr(importlib.import_module(module), attribute)), (module, attribute)
    assert callable(importlib.import_module("coordinator._envelopes").nonce_store)
    counter_ids = {name for _, _, name in pl.INSTRUMENTED} | {pl.NONCE_COUNTER,
                                                              pl.FAN_OUT_COUNTER}
    assert {name for name, _, _ in pl.STAGES} <= counter_ids


def test_cpu_seconds_of_this_process() -> None:
    first = pl.cpu_seconds(os.getpid())
    assert 0 < first <= pl.cpu_seconds(os.getpid())


# --- in process ------------------------------------------------------------------------------


def test_in_process_rounds_complete_in_both_modes(tmp_path: Path) -> None:
    pull, push = pl.measure_in_process([3], seed=11, workdir=tmp_path)
    for result in (pull, push):
        assert (result.status, result.answered) == ("completed", 3)
        assert result.cpu_s == pytest.approx(sum(result.steps.values()))
    assert {"envelopes", "next_job", "record_result"} <= set(pull.steps)
    assert {"deliver", "fan_out", "record_result"} <= set(push.steps)
    assert pull.idle_recheck_cpu_s is not None and push.idle_recheck_cpu_s is None


# --- tables and notes ------------------------------------------------------------------------


def _sample(status: str, answered: int, seconds: float, cpu: float) -> pl.QuerySample:
    counters = {"next_job": [4.0, 0.01, 0.02], "open_from_node": [8.0, 0.02, 0.5],
                pl.NONCE_COUNTER: [8.0, 0.005, 0.4], "due_queries": [1.0, 0.001, 0.001],
                "record_result_push": [4.0, 0.02, 0.03]}
    return pl.QuerySample(status, answered, seconds + 0.1, seconds, cpu, 0.05, counters)


def _mode(mode: str, nodes: int, *samples: pl.QuerySample, deadline: float = 150.0
          ) -> pl.ModeResult:
    return pl.ModeResult(mode, nodes, samples, idle_cpu_per_s=0.02 * nodes,
                         idle_counters={"next_job": [nodes, 0.002 * nodes, 0.002 * nodes]},
                         deadline_s=deadline)


def _results() -> tuple[pl.HttpResults, list[pl.InProcessResult]]:
    small = pl.SizeResult(4, _mode("pull", 4, _sample("completed", 4, 0.4, 0.2),
                                   _sample("completed", 4, 0.6, 0.3)),
                          _mode("push", 4, _sample("completed", 4, 0.2, 0.1),
                                _sample("completed", 4, 0.2, 0.1)))
    large = pl.SizeResult(9, _mode("pull", 9, _sample("failed", 5, 30.0, 12.0), deadline=30.0),
                          _mode("push", 9, _sample("completed", 9, 1.0, 0.5)))
    in_process = [pl.InProcessResult(9, "pull", "completed", 9, 0.09, 0.1,
                                     {"envelopes": 0.05, "next_job": 0.04}, 0.01),
                  pl.InProcessResult(9, "push", "completed", 9, 0.03, 0.04, {"fan_out": 0.03})]
    return pl.HttpResults([small, large], {"errors": 2, "last_error": "pull-0001: boom"}), \
        in_process


def test_rows_ratios_and_failed_attempts() -> None:
    http, _ = _results()
    small, large = http.sizes
    assert small.pull.row()["completion_s"] == pytest.approx(0.5)
    assert small.pull.row()["cpu_ms_per_node"] == pytest.approx(62.5)
    assert small.ratio("completion_s") == pytest.approx(2.5)
    failed = large.pull.row()
    assert failed["completed"] == "0/1" and failed["answered"] == "5/9"
    assert failed["completion_s"] is None and failed["cpu_s"] == 12.0
    assert large.ratio_row() == {"nodes": 9, "completion": None, "response": None, "cpu": None}


def test_profile_rows_add_up_to_the_process_cpu() -> None:
    http, _ = _results()
    rows = pl.profile_rows(http.sizes[0].pull)
    assert rows[-1]["stage"] == pl.TOTAL and rows[-1]["cpu_ms"] == pytest.approx(250.0)
    nested = {label for _, label, inner in pl.STAGES if inner}
    top = sum(r["cpu_ms"] for r in rows[:-1] if r["stage"] not in nested)
    assert top == pytest.approx(250.0)
    assert any(r["stage"].startswith("`finalize_query` + `due_queries`") for r in rows)


def test_tables_and_notes_render() -> None:
    http, in_process = _results()
    tables = pl.result_tables(http, in_process)
    titles = [t.title for t in tables]
    assert titles[0].startswith("Over HTTP: latency")
    assert titles[2].startswith("In process, no HTTP")
    # Profiles: both modes at 4 nodes (both completed), push at 9 (pull failed there).
    assert [t for t in titles if "where the coordinator's CPU goes" in t] == [
        "Over HTTP: where the coordinator's CPU goes, pull mode, 4 nodes (mean per timed query)",
        "Over HTTP: where the coordinator's CPU goes, push mode, 4 nodes (mean per timed query)",
        "Over HTTP: where the coordinator's CPU goes, push mode, 9 nodes (mean per timed query)",
    ]
    text = "\n".join(markdown_table(t) for t in tables)
    assert "| 9 | pull | 1 | 0/1 | 5/9 | 30 | – | – | 12.00 | 1,333.3 |" in text
    assert "| 4 | 2.50 | 2.00 | 2.50 |" in text and "| 9 | – | – | – |" in text
    notes = "\n".join(pl.findings(http, in_process))
    assert "4 nodes: pull 0.50 s vs push 0.20 s (2.5x)" in notes
    assert "9 nodes, pull: 0 of 1 queries completed, median 5/9 answers by the 30 s" in notes
    assert "9 nodes: pull 0.09 s CPU per query (10.0 ms per node), push 0.03 s (3.3 ms), 3.0x" \
        in notes
    assert "2 failed requests" in notes and "In process (no HTTP" in notes


def test_the_entry_is_listed() -> None:
    assert pl.BENCHMARK in BENCHMARKS
    assert "In process" not in pl.BENCHMARK.title and pl.BENCHMARK.description.strip()


# --- one tiny round with real processes ------------------------------------------------------


@pytest.mark.processes
def test_a_tiny_round_completes_in_both_modes(tmp_path: Path) -> None:
    http = pl.measure([pl.Size(2, 1, warmup=0)], seed=5, idle_seconds=0.2, workdir=tmp_path)
    (size,) = http.sizes
    for mode in (size.pull, size.push):
        (sample,) = mode.samples
        assert (sample.status, sample.answered) == ("completed", 2), mode.mode
        assert sample.coordinator_cpu_s >= 0 and sample.completion_s > 0
        assert sample.counters  # the instrumented coordinator counted its calls
    assert size.pull.samples[0].counters["next_job"][0] >= 2
    assert size.push.samples[0].counters["record_result_push"][0] == 2
    assert http.agent_stats["results"] == 2 and http.agent_stats["errors"] == 0
    assert multiprocessing.active_children() == []
    logs = {p.name for p in tmp_path.iterdir()}
    assert {"coordinator-pull.log", "coordinator-push.log", "pull-nodes.log",
            "push-nodes.log"} <= logs
