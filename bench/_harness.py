"""The generic part of the benchmarks: registry, timing, rendering and BENCHMARKS.md.

An entry is a :class:`Benchmark`: a name, a title, a Markdown description of what it measures,
and a ``run(config)`` function returning an :class:`EntryResult` (tables of measured rows plus
Markdown notes). The harness times nothing itself; entries call :func:`measure` or
:func:`measure_interleaved` and report ratios against a baseline measured *in the same run*,
because the machines these run on are shared and absolute times are noisy.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

__all__ = [
    "DEFAULT_OUTPUT",
    "Benchmark",
    "Column",
    "EntryResult",
    "MachineInfo",
    "Registry",
    "RunConfig",
    "Table",
    "Timing",
    "machine_info",
    "main",
    "markdown_table",
    "measure",
    "measure_interleaved",
    "render_markdown",
    "run_benchmarks",
]

#: Where a full run writes its report: BENCHMARKS.md at the repository root.
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
#: Libraries whose versions the report records.
REPORTED_PACKAGES = ("polars", "opendp", "numpy")
_MISSING = "–"


# --- entries and results ------------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    """How the harness was asked to run; every entry receives it."""

    quick: bool = False
    seed: int = 20240601


@dataclass(frozen=True)
class Column:
    """One column of a result table: the row key it shows, its header and its format.

    ``fmt`` is a :func:`format` spec (``",d"``, ``".3f"``, ``".2f"``); ``None`` cells show as
    a dash. Numeric columns are right-aligned.
    """

    key: str
    header: str
    fmt: str = ""
    numeric: bool = True

    def render(self, value: Any) -> str:
        """The cell text of ``value``."""
        if value is None:
            return _MISSING
        if isinstance(value, float) and value != value:  # NaN
            return _MISSING
        return format(value, self.fmt) if self.fmt else str(value)


@dataclass(frozen=True)
class Table:
    """Rows of measured values (one mapping per row, keyed by :attr:`Column.key`)."""

    columns: Sequence[Column]
    rows: Sequence[Mapping[str, Any]]
    title: str = ""

    def cells(self) -> list[list[str]]:
        """The rendered text of every cell, row by row; a key a row lacks shows as a dash."""
        return [[col.render(row.get(col.key)) for col in self.columns] for row in self.rows]


@dataclass(frozen=True)
class EntryResult:
    """What an entry's run produced: its tables, then Markdown notes on the measured values."""

    tables: Sequence[Table]
    notes: Sequence[str] = ()


@dataclass(frozen=True)
class Benchmark:
    """A benchmark entry. ``description`` is Markdown (what is measured, how to read it)."""

    name: str
    title: str
    description: str
    run: Callable[[RunConfig], EntryResult] = field(compare=False)


class Registry:
    """Benchmark entries by name, in the order they were added."""

    def __init__(self, benchmarks: Iterable[Benchmark] = ()) -> None:
        self._entries: dict[str, Benchmark] = {}
        for bench in benchmarks:
            self.add(bench)

    def add(self, bench: Benchmark) -> Benchmark:
        """Register ``bench``; names are unique. Returns ``bench``."""
        if bench.name in self._entries:
            raise ValueError(f"benchmark {bench.name!r} is registered twice")
        self._entries[bench.name] = bench
        return bench

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def select(self, only: Sequence[str] | None = None) -> list[Benchmark]:
        """The entries named in ``only`` (in registration order), or all of them."""
        if not only:
            return list(self._entries.values())
        unknown = sorted(set(only) - set(self._entries))
        if unknown:
            raise KeyError(
                f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(self.names())}"
            )
        return [b for name, b in self._entries.items() if name in set(only)]

    def __len__(self) -> int:
        return len(self._entries)


# --- timing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of the timed repeats (warm-up runs excluded)."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        """Median of the repeats: what the tables report."""
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        """Fastest repeat."""
        return min(self.samples)

    @property
    def max(self) -> float:
        """Slowest repeat."""
        return max(self.samples)

    def ratio_to(self, baseline: Timing) -> float:
        """``median / baseline.median``: how many times slower than the baseline."""
        return self.median / baseline.median


def _timed(fn: Callable[[], object], clock: Callable[[], float]) -> float:
    gc.collect()
    start = clock()
    fn()
    return clock() - start


def measure(
    fn: Callable[[], object],
    *,
    repeats: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed (after a GC each)."""
    return measure_interleaved({"fn": fn}, repeats=repeats, warmup=warmup, clock=clock)["fn"]


def measure_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Time several functions in alternation: ``a, b, a, b, ...`` for ``repeats`` rounds.

    Interleaving exposes every function to the same background load, so ratios between them
    stay meaningful on a busy machine even when the absolute times do not.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(_timed(fn, clock))
    return {name: Timing(tuple(values)) for name, values in samples.items()}


# --- the machine --------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineInfo:
    """What the report says about where it was measured."""

    cores: int
    ram_gib: float | None
    cpu: str
    system: str
    python: str
    packages: Mapping[str, str]
    load_average: tuple[float, float, float] | None

    def lines(self) -> list[str]:
        """The Markdown bullet lines of the report header."""
        ram = _MISSING if self.ram_gib is None else f"{self.ram_gib:.1f} GiB RAM"
        load = (
            _MISSING
            if self.load_average is None
            else " / ".join(f"{x:.2f}" for x in self.load_average)
        )
        packages = ", ".join(f"{name} {version}" for name, version in self.packages.items())
        return [
            f"- Machine: {self.cores} cores, {ram}, {self.cpu}, {self.system}",
            f"- Python {self.python}; {packages}",
            f"- Load average (1/5/15 min) at start: {load}",
        ]


def _ram_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> MachineInfo:
    """Cores, RAM, CPU, OS, Python and library versions of this machine."""
    try:
        load: tuple[float, float, float] | None = os.getloadavg()
    except OSError:
        load = None
    return MachineInfo(
        cores=os.cpu_count() or 1,
        ram_gib=_ram_gib(),
        cpu=_cpu_model(),
        system=f"{platform.system()} {platform.release()} {platform.machine()}",
        python=platform.python_version(),
        packages={name: _version(name) for name in REPORTED_PACKAGES},
        load_average=load,
    )


# --- rendering ----------------------------------------------------------------------------


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    """``table`` as a GitHub-flavoured Markdown table (numeric columns right-aligned)."""
    header = "| " + " | ".join(_escape(c.header) for c in table.columns) + " |"
    rule = "|" + "|".join("---:" if c.numeric else ":---" for c in table.columns) + "|"
    body = ["| " + " | ".join(_escape(cell) for cell in row) + " |" for row in table.cells()]
    return "\n".join([header, rule, *body])


def render_markdown(
    ran: Sequence[tuple[Benchmark, EntryResult, float]],
    *,
    command: str,
    date: datetime,
    machine: MachineInfo,
    config: RunConfig,
) -> str:
    """The whole BENCHMARKS.md text: header, then one section per entry."""
    mode = "quick (small sizes, smoke test only)" if config.quick else "full"
    lines = [
        "# Benchmarks",
        "",
        "Generated by the benchmark harness (`bench/`); do not edit by hand, rerun it instead.",
        "Timings are medians of repeats after a warm-up; compare the *ratios* to the baseline",
        "measured in the same run, not absolute seconds (the machine is shared).",
        "",
        f"- Command: `{command}`",
        f"- Date: {date.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Mode: {mode}; seed {config.seed}",
        *machine.lines(),
    ]
    for bench, result, seconds in ran:
        lines += ["", f"## {bench.title}", "", f"Entry `{bench.name}`; ran in {seconds:.0f} s.",
                  "", bench.description.strip()]
        for table in result.tables:
            lines.append("")
            if table.title:
                lines += [f"### {table.title}", ""]
            lines.append(markdown_table(table))
        for note in result.notes:
            lines += ["", note.strip()]
    return "\n".join(lines) + "\n"


def print_result(console: Console, bench: Benchmark, result: EntryResult) -> None:
    """Print an entry's tables (Rich; plain text when stdout is not a terminal)."""
    for table in result.tables:
        title = bench.title + (f": {table.title}" if table.title else "")
        rich = RichTable(title=title, title_justify="left")
        for col in table.columns:
            rich.add_column(col.header, justify="right" if col.numeric else "left")
        for row in table.cells():
            rich.add_row(*row)
        console.print(rich)


# --- running ------------------------------------------------------------------------------


def run_benchmarks(
    benchmarks: Sequence[Benchmark], config: RunConfig, console: Console
) -> list[tuple[Benchmark, EntryResult, float]]:
    """Run each entry, printing its tables as soon as it finishes."""
    ran = []
    for bench in benchmarks:
        console.print(f"[bold]running {bench.name}[/bold] ({'quick' if config.quick else 'full'})")
        start = time.perf_counter()
        result = bench.run(config)
        seconds = time.perf_counter() - start
        print_result(console, bench, result)
        console.print(f"{bench.name}: {seconds:.1f} s")
        ran.append((bench, result, seconds))
    return ran


def _parser(names: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmarks, print their tables and write BENCHMARKS.md.",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="small sizes, a few seconds per entry (smoke test); does not write BENCHMARKS.md "
        "unless --output is given",
    )
    parser.add_argument(
        "--only", action="append", choices=list(names), metavar="NAME",
        help=f"run only this entry (repeatable); one of: {', '.join(names)}",
    )
    parser.add_argument(
        "--output", type=Path, default=None,
        help=f"where to write the Markdown report (default for full runs: {DEFAULT_OUTPUT.name} "
        "at the repository root)",
    )
    parser.add_argument("--seed", type=int, default=RunConfig.seed, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str], benchmarks: Sequence[Benchmark]) -> int:
    """The ``python -m bench`` command line."""
    registry = Registry(benchmarks)
    args = _parser(registry.names()).parse_args(list(argv))
    config = RunConfig(quick=args.quick, seed=args.seed)
    # Piped output (CI logs, tee) gets wide plain tables instead of Rich's 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    machine = machine_info()
    date = datetime.now(UTC)
    ran = run_benchmarks(registry.select(args.only), config, console)
    output: Path | None = args.output
    if output is None and not config.quick:
        output = DEFAULT_OUTPUT
    if output is None:
        console.print("quick run: no report written (pass --output PATH to write one)")
        return 0
    command = shlex.join(["python", "-m", "bench", *argv])
    text = render_markdown(ran, command=command, date=date, machine=machine, config=config)
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output}")
    return 0
