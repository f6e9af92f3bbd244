"""The benchmark harness without timing anything: registry, timing logic on a fake clock,
table and Markdown rendering, the command line, and the ``dp_groupby`` entry's data, query
and its two paths (which must agree on cells and, without noise, on values).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from bench import _harness, dp_groupby
from bench.__main__ import BENCHMARKS
from bench._harness import (
    Benchmark,
    Column,
    EntryResult,
    MachineInfo,
    Registry,
    RunConfig,
    Table,
    Timing,
    markdown_table,
    measure,
    measure_interleaved,
    render_markdown,
)
from node._aggregate import RECORD_SCHEMA, exact_cell_values
from protocols import FIXED_POINT_SCALE, Dimension, Flow

# --- fixtures -------------------------------------------------------------------------------


def _result() -> EntryResult:
    table = Table(
        [Column("name", "name", numeric=False), Column("rows", "rows", ",d"),
         Column("ratio", "DP / baseline", ".2f")],
        [{"name": "small", "rows": 1000, "ratio": 2.345}, {"name": "a|b", "rows": 10_000_000}],
    )
    return EntryResult(tables=[table], notes=["A note with **Markdown**."])


def _bench(name: str = "fake", result: EntryResult | None = None) -> Benchmark:
    def run(config: RunConfig) -> EntryResult:
        return result if result is not None else _result()

    return Benchmark(name=name, title=f"The {name} entry", description="What it measures.",
                     run=run)


MACHINE = MachineInfo(
    cores=2, ram_gib=24.0, cpu="Test CPU", system="Linux 6.0 x86_64", python="3.11.9",
    packages={"polars": "1.36.1", "opendp": "0.16.0"}, load_average=(1.0, 0.5, 0.25),
)


# --- registry ------------------------------------------------------------------------------


def test_registry_keeps_order_and_rejects_duplicates() -> None:
    registry = Registry([_bench("b"), _bench("a")])
    registry.add(_bench("c"))
    assert registry.names() == ["b", "a", "c"]
    assert len(registry) == 3
    with pytest.raises(ValueError, match="'a' is registered twice"):
        registry.add(_bench("a"))


def test_registry_select() -> None:
    registry = Registry([_bench("b"), _bench("a"), _bench("c")])
    assert [b.name for b in registry.select()] == ["b", "a", "c"]
    assert [b.name for b in registry.select(["c", "b"])] == ["b", "c"]
    with pytest.raises(KeyError, match="unknown benchmark"):
        registry.select(["nope"])


def test_main_lists_every_entry_once() -> None:
    registry = Registry(BENCHMARKS)
    assert "dp_groupby" in registry.names()
    assert all(b.description.strip() and b.title for b in BENCHMARKS)


# --- timing logic (fake clock) ------------------------------------------------------------


class FakeClock:
    """A clock that only moves when a benchmarked function says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def work(self, name: str, seconds: float) -> None:
        self.calls.append(name)
        self.now += seconds


def test_measure_interleaved_alternates_after_warmup() -> None:
    clock = FakeClock()
    durations = iter([9.0, 9.0, 1.0, 3.0, 2.0, 6.0, 1.0, 3.0])  # warm-up first: not counted
    timings = measure_interleaved(
        {
            "base": lambda: clock.work("base", next(durations)),
            "dp": lambda: clock.work("dp", next(durations)),
        },
        repeats=3, warmup=1, clock=clock,
    )
    assert clock.calls == ["base", "dp"] * 4
    assert timings["base"].samples == (1.0, 2.0, 1.0)
    assert timings["dp"].samples == (3.0, 6.0, 3.0)
    assert timings["dp"].ratio_to(timings["base"]) == 3.0


def test_measure_single_function() -> None:
    clock = FakeClock()
    timing = measure(lambda: clock.work("f", 0.5), repeats=4, warmup=2, clock=clock)
    assert clock.calls == ["f"] * 6
    assert timing.samples == (0.5,) * 4


@pytest.mark.parametrize(("repeats", "warmup"), [(0, 1), (1, -1)])
def test_measure_rejects_bad_counts(repeats: int, warmup: int) -> None:
    with pytest.raises(ValueError, match="repeats"):
        measure(lambda: None, repeats=repeats, warmup=warmup, clock=FakeClock())


def test_timing_statistics() -> None:
    timing = Timing((3.0, 1.0, 2.0, 10.0))
    assert (timing.median, timing.min, timing.max) == (2.5, 1.0, 10.0)
    assert timing.ratio_to(Timing((1.25,))) == 2.0


# --- rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "text"),
    [
        (Column("x", "x", ",d"), 10_000_000, "10,000,000"),
        (Column("x", "x", ".2f"), 2.345, "2.35"),  # binary 2.345 is just below the tie
        (Column("x", "x", ",.0f"), 5231.4, "5,231"),
        (Column("x", "x"), "text", "text"),
        (Column("x", "x", ".3f"), None, "–"),
        (Column("x", "x", ".3f"), float("nan"), "–"),
    ],
)
def test_column_render(column: Column, value: object, text: str) -> None:
    assert column.render(value) == text


def test_markdown_table() -> None:
    assert markdown_table(_result().tables[0]) == (
        "| name | rows | DP / baseline |\n"
        "|:---|---:|---:|\n"
        "| small | 1,000 | 2.35 |\n"
        "| a\\|b | 10,000,000 | – |"
    )


def test_render_markdown_report() -> None:
    bench = _bench("fake")
    text = render_markdown(
        [(bench, _result(), 12.3)],
        command="python -m bench --only fake",
        date=datetime(2025, 1, 2, 3, 4, tzinfo=UTC),
        machine=MACHINE,
        config=RunConfig(quick=False),
    )
    assert text.startswith("# Benchmarks\n")
    assert text.endswith("\n") and not text.endswith("\n\n")
    for expected in (
        "- Command: `python -m bench --only fake`",
        "- Date: 2025-01-02 03:04 UTC",
        "- Mode: full; seed 20240601",
        "- Machine: 2 cores, 24.0 GiB RAM, Test CPU, Linux 6.0 x86_64",
        "- Python 3.11.9; polars 1.36.1, opendp 0.16.0",
        "- Load average (1/5/15 min) at start: 1.00 / 0.50 / 0.25",
        "## The fake entry\n\nEntry `fake`; ran in 12 s.\n\nWhat it measures.\n\n| name |",
        "| small | 1,000 | 2.35 |\n| a\\|b | 10,000,000 | – |\n\nA note with **Markdown**.\n",
    ):
        assert expected in text


def test_render_markdown_table_titles_and_quick_mode() -> None:
    result = EntryResult(tables=[Table([Column("n", "n", "d")], [{"n": 1}], title="Profile")])
    text = render_markdown(
        [(_bench(), result, 1.0)], command="python -m bench --quick",
        date=datetime(2025, 1, 2, tzinfo=UTC), machine=MACHINE, config=RunConfig(quick=True),
    )
    assert "- Mode: quick (small sizes, smoke test only)" in text
    assert "### Profile\n\n| n |\n|---:|\n| 1 |" in text


def test_machine_info_describes_this_machine() -> None:
    info = _harness.machine_info()
    assert info.cores >= 1
    assert set(info.packages) == set(_harness.REPORTED_PACKAGES)
    assert all(line.startswith("- ") for line in info.lines())


# --- command line --------------------------------------------------------------------------


def test_main_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "report.md"
    ran: list[RunConfig] = []

    def run(config: RunConfig) -> EntryResult:
        ran.append(config)
        return _result()

    benches = [Benchmark("one", "One", "First.", run), _bench("two")]
    assert _harness.main(["--only", "one", "--output", str(output)], benches) == 0
    assert ran == [RunConfig(quick=False)]
    text = output.read_text(encoding="utf-8")
    assert f"- Command: `python -m bench --only one --output {output}`" in text
    assert "## One" in text and "## The two entry" not in text
    assert "small" in capsys.readouterr().out


def test_quick_run_writes_nothing_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_harness, "DEFAULT_OUTPUT", tmp_path / "BENCHMARKS.md")
    assert _harness.main(["--quick"], [_bench()]) == 0
    assert not (tmp_path / "BENCHMARKS.md").exists()
    assert "no report written" in capsys.readouterr().out


def test_full_run_writes_the_default_output(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_harness, "DEFAULT_OUTPUT", tmp_path / "BENCHMARKS.md")
    assert _harness.main([], [_bench()]) == 0
    assert "## The fake entry" in (tmp_path / "BENCHMARKS.md").read_text(encoding="utf-8")


def test_unknown_entry_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc_info:
        _harness.main(["--only", "nope"], [_bench()])
    assert exc_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


# --- the dp_groupby entry: data and query ---------------------------------------------------


def test_synthetic_records_have_the_schema_and_row_count() -> None:
    records = dp_groupby.make_records(5_000, seed=1)
    assert records.height == 5_000
    assert dict(records.schema) == RECORD_SCHEMA
    assert records["record_id"].n_unique() == 5_000
    nulls = records.null_count().row(0, named=True)
    is_trade = records["flow"].is_in([str(Flow.IMPORT), str(Flow.EXPORT)])
    assert nulls.pop("partner_country") == (~is_trade).sum()
    assert set(nulls.values()) == {0}


def test_synthetic_records_are_consistent() -> None:
    records = dp_groupby.make_records(5_000, seed=1, sites=300)
    year = dp_groupby.YEAR
    assert records["year"].unique().to_list() == [year]
    assert (records["first_month"] == records["last_month"]).all()
    # January is year * 12 + 1 - 1, December year * 12 + 11.
    assert records["first_month"].is_between(year * 12, year * 12 + 11).all()
    assert set(records["commodity"]) <= {str(c) for c in dp_groupby.COMMODITIES}
    assert set(records["flow"]) == {str(f) for f in dp_groupby.FLOWS}
    assert set(records["country"]) <= set(dp_groupby.COUNTRIES)
    assert (records["partner_country"] != records["country"]).all()  # nulls are skipped
    assert records["contribution_unit"].str.starts_with("site:").all()
    assert records["contribution_unit"].n_unique() <= 300
    assert (records["quantity_t"] > 0).all()
    # Every site has one commodity, country and stage.
    per_site = records.group_by("contribution_unit").agg(
        pl.col("commodity", "country", "stage").n_unique()
    )
    assert per_site.drop("contribution_unit").max().row(0) == (1, 1, 1)


def test_synthetic_records_are_seeded() -> None:
    first = dp_groupby.make_records(1_000, seed=5)
    assert first.equals(dp_groupby.make_records(1_000, seed=5))
    assert not first.equals(dp_groupby.make_records(1_000, seed=6))


def test_query_has_the_documented_shape() -> None:
    query = dp_groupby.make_query()
    assert query.cell_count() == 1_120 == len(query.public_keys())
    assert query.group_by == [Dimension.COMMODITY, Dimension.COUNTRY, Dimension.FLOW]
    assert query.periods == ["2024"]
    assert (query.epsilon, query.bounds.record_clip, query.bounds.unit_sum_bound) == (
        1.0, 500.0, 5000.0)
    coverage = dp_groupby.make_coverage()
    assert [e.commodity for e in coverage] == list(dp_groupby.COMMODITIES)


# --- the dp_groupby entry: the two paths agree ----------------------------------------------


@pytest.fixture(scope="module")
def unbiased_records() -> pl.DataFrame:
    """Few records per site, so no site-year reaches the per-unit bound (no scaling bias)."""
    records = dp_groupby.make_records(3_000, seed=7, sites=3_000)
    per_unit = records.group_by("contribution_unit").agg(
        pl.col("quantity_t").clip(0.0, dp_groupby.RECORD_CLIP).sum()
    )
    assert per_unit["quantity_t"].max() < dp_groupby.UNIT_SUM_BOUND  # type: ignore[operator]
    return records


def _plain(records: pl.DataFrame) -> dict[tuple[str, ...], tuple[float, int]]:
    query = dp_groupby.make_query()
    plain = dp_groupby.plain_clipped_sums(records, query)
    counts = records.group_by("commodity", "country", "flow").len()
    joined = plain.join(counts, on=["commodity", "country", "flow"])
    return {(c, k, f): (s, n) for c, k, f, s, n in joined.iter_rows()}


def test_both_paths_agree_on_which_cells_exist(unbiased_records: pl.DataFrame) -> None:
    query = dp_groupby.make_query()
    plain = _plain(unbiased_records)
    exact, counts = exact_cell_values(unbiased_records, query, dp_groupby.make_coverage())
    assert exact is not None and counts is None
    nonzero = {key for key, value in zip(query.public_keys(), exact, strict=True) if value}
    assert set(plain) == nonzero
    assert 0 < len(plain) < query.cell_count()  # some cells are empty at this size
    released = dp_groupby.release_sums(unbiased_records, query, dp_groupby.make_coverage())
    assert list(released) == query.public_keys()  # the release covers every public key


def test_without_noise_dp_sums_equal_plain_clipped_sums(unbiased_records: pl.DataFrame) -> None:
    # epsilon 1e9 is outside what the wire model accepts (at most 10): model_copy skips the
    # validation. The noise scale is then 5e-3 fixed-point units, so the noise is 0.
    query = dp_groupby.make_query().model_copy(update={"epsilon": 1e9})
    released = dp_groupby.release_sums(unbiased_records, query, dp_groupby.make_coverage())
    plain = _plain(unbiased_records)
    rounding = 0.5 / FIXED_POINT_SCALE  # each record is rounded to the fixed-point grid
    for key, value in released.items():
        expected, records = plain.get(key, (0.0, 0))
        assert value == pytest.approx(expected, abs=rounding * records + 1e-9), key


def test_profile_covers_the_dp_path(unbiased_records: pl.DataFrame) -> None:
    profile = dp_groupby.profile_release(
        unbiased_records, dp_groupby.make_query(), dp_groupby.make_coverage()
    )
    functions = [row.function for row in profile]
    assert functions[-1] == "compute_release"
    assert profile[-1].share == pytest.approx(100.0)
    assert {"_in_scope", "_bounded_sums", "_vector", "release"} <= set(functions)
    stages = profile[:-1]
    assert sum(row.share for row in stages) == pytest.approx(100.0)
    # Every listed stage really ran (cProfile saw it), except the remainder row.
    assert all(row.seconds > 0 for row in stages if row.function)


# --- the dp_groupby entry: its tables and notes ----------------------------------------------


def test_result_columns_match_the_measured_fields() -> None:
    fields = [f.name for f in dataclasses.fields(dp_groupby.SizeResult)]
    assert [c.key for c in dp_groupby.RESULT_COLUMNS] == fields
    assert [c.key for c in dp_groupby.PROFILE_COLUMNS] == [
        f.name for f in dataclasses.fields(dp_groupby.ProfileRow)
    ]


def _profile() -> list[dp_groupby.ProfileRow]:
    seconds = {"_in_scope": 0.5, "_bounded_sums": 8.0, "_vector": 0.002,
               "laplace_mechanism": 0.001, "release": 0.009}
    total = 10.0
    rows = [dp_groupby.ProfileRow(label, name, seconds[name], 10 * seconds[name])
            for _, name, label in dp_groupby.PROFILE_STAGES]
    other = total - sum(seconds.values())
    return [*rows, dp_groupby.ProfileRow("other", "", other, 10 * other),
            dp_groupby.ProfileRow("total", "compute_release", total, 100.0)]


def _size_result(rows: int, ratio: float) -> dp_groupby.SizeResult:
    return dp_groupby.SizeResult(
        rows=rows, keys=1120, cells=1120, repeats=3, baseline_s=1.0, dp_s=ratio, ratio=ratio,
        scale_t=5000.0, mae_bounded_t=5000.0, mae_clipped_t=9000.0, mean_cell_t=28000.0,
    )


def test_findings_name_the_ratios_and_the_dominant_stages() -> None:
    results = [_size_result(1_000_000, 6.29), _size_result(10_000_000, 5.02)]
    notes = dp_groupby.findings(results, _profile(), dp_groupby.make_query())
    assert notes[0].startswith(
        "**Result.** DP / baseline: 6.3x at 1,000,000 records, 5.0x at 10,000,000 records. "
        "In the profiled run (10.00 s under cProfile) Polars work over the records took "
        "9.99 s (99.9%; largest: `_bounded_sums` 80%, `other` 15%, `_in_scope` 5%"
    )
    assert "public-key vector took 2.0 ms and OpenDP (mechanism and sampler) 10.0 ms" in notes[0]
    assert len(notes) == 1
