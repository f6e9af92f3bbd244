"""Waking long-polling nodes when jobs are queued (an optimisation: polls also re-check).

A node's poll waits on a broadcast event; :func:`jobs_queued` fires it from any thread. Each
wait also re-checks the database at least every second, so jobs queued by another
coordinator process are found too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["JobNotifier", "jobs_queued", "notifier"]

_T = TypeVar("_T")


class JobNotifier:
    """A broadcast event bound to the running event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def _current(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._event is None or self._loop is not loop:
            self._loop, self._event = loop, asyncio.Event()
        return self._event

    def _fire(self) -> None:
        old, self._event = self._event, asyncio.Event()
        if old is not None:
            old.set()

    def notify_all(self) -> None:
        """Wake every waiting poll (safe from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fire()
        else:
            loop.call_soon_threadsafe(self._fire)

    async def wait_for_job(self, fetch: Callable[[], _T | None], *, node_id: str,
                           wait_seconds: float, recheck_seconds: float = 1.0) -> _T | None:
        """Return ``fetch()`` as soon as it finds something, or ``None`` after the wait."""
        deadline = time.monotonic() + wait_seconds
        while True:
            event = self._current()
            found = fetch()
            remaining = deadline - time.monotonic()
            if found is not None or remaining <= 0:
                return found
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=min(recheck_seconds, remaining))


_NOTIFIER = JobNotifier()


def jobs_queued() -> None:
    """Tell waiting polls in this process that jobs were queued."""
    _NOTIFIER.notify_all()


def notifier() -> JobNotifier:
    """The process's notifier."""
    return _NOTIFIER
