"""Progress displays of the CLI: always on stderr, and only for a person at a terminal.

A display is shown when stderr is a terminal and the command does not print JSON (``--json``),
so scripts that read stdout (or capture stderr) get the same bytes as before. Tests replace
``crimmis_dpn.cli._common.err_console`` with a console forced to be a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from crimmis_dpn.cli import _common

__all__ = ["FINAL_STATES", "Stages", "follow_query", "progress_enabled", "spinner", "stages"]

#: States of a pooled query after which nothing changes.
FINAL_STATES = frozenset({"completed", "failed"})
#: Seconds the coordinator may hold each status request (it answers at once when done).
POLL_WAIT_SECONDS = 2.0


class _Outcome(Protocol):
    node_id: str
    status: Any


class _Pooled(Protocol):
    """What :class:`coordinator.PooledResult` and ``PooledSynthetic`` have in common."""

    @property
    def status(self) -> str: ...

    @property
    def quorum(self) -> int: ...

    @property
    def nodes(self) -> Sequence[_Outcome]: ...


P = TypeVar("P", bound=_Pooled)


def progress_enabled(as_json: bool) -> bool:
    """Show progress? Not with ``--json``, and not when stderr is not a terminal."""
    return not as_json and _common.err_console.is_terminal


def _progress(enabled: bool, *, bar: bool) -> Progress:
    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if bar:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn("[dim]{task.fields[detail]}[/dim]"), TimeElapsedColumn()]
    return Progress(*columns, console=_common.err_console, disable=not enabled)


def _tally(result: _Pooled) -> tuple[int, int, str]:
    """(nodes that responded, nodes asked, a short account of their outcomes)."""
    counts: dict[str, int] = {}
    for outcome in result.nodes:
        counts[str(outcome.status)] = counts.get(str(outcome.status), 0) + 1
    pending = counts.pop("pending", 0)
    parts = [f"{n} {state}" for state, n in sorted(counts.items())]
    parts.append(f"quorum {result.quorum}")
    return len(result.nodes) - pending, len(result.nodes), " · ".join(parts)


def follow_query(
    first: P,
    poll: Callable[[float], P],
    *,
    label: str,
    enabled: bool,
    timeout: float,
    progress: Progress | None = None,
) -> P:
    """Poll a pooled query until it is completed or failed, or ``timeout`` seconds pass.

    ``first`` is the state the submission returned; ``poll(wait_seconds)`` asks the
    coordinator again. The bar counts the nodes that responded (answered, refused, ...) out of
    the nodes the query went to. Returns the last state seen (which may still be running).
    """
    stop = time.monotonic() + timeout
    with _owned(progress, enabled, bar=True) as shown:
        task = shown.add_task(label, total=None, detail="submitted")
        result = first
        while True:
            done, expected, detail = _tally(result)
            shown.update(task, completed=done, total=expected or None,
                         detail=f"{result.status} · {detail}")
            left = stop - time.monotonic()
            if result.status in FINAL_STATES or left <= 0:
                return result
            result = poll(min(POLL_WAIT_SECONDS, max(left, 0.0)))


@contextmanager
def _owned(progress: Progress | None, enabled: bool, *, bar: bool) -> Iterator[Progress]:
    if progress is not None:
        yield progress
        return
    with _progress(enabled, bar=bar) as made:
        yield made


class Stages:
    """Named stages shown one line each: a spinner while running, a tick once done."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    @contextmanager
    def stage(self, description: str) -> Iterator[None]:
        """Show ``description`` while the block runs; mark it done when it ends."""
        task = self.progress.add_task(description, total=1, detail="")
        yield
        self.progress.update(task, completed=1, detail="done")


@contextmanager
def stages(enabled: bool) -> Iterator[Stages]:
    """A display of stages, with room for a bar of node answers (see :func:`follow_query`)."""
    with _progress(enabled, bar=True) as progress:
        yield Stages(progress)


@contextmanager
def spinner(message: str, *, enabled: bool) -> Iterator[None]:
    """A spinner with ``message`` on stderr while the block runs (a call that cannot report
    its progress, such as a balance the coordinator pools in one request)."""
    if not enabled:
        yield
        return
    with _common.err_console.status(message):
        yield
