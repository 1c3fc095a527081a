"""The one way tests wait: poll a condition until it holds, or fail at a deadline with what was awaited.

``wait_until`` for plain code and threads, ``eventually`` inside a running event loop (it also
awaits a probe that returns an awaitable). Both return the probe's first truthy value and fail with
its last value, so a timeout says what was seen. The deadline is generous because CI machines are
loaded: it bounds a failure, it never paces a passing test.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["DEADLINE", "eventually", "wait_until"]

T = TypeVar("T")
DEADLINE = 30.0


class _Deadline:
    def __init__(self, timeout: float, what: str) -> None:
        self.timeout, self.what = timeout, what
        self._end = time.monotonic() + timeout
        self.interval = 0.005

    def check(self, last: object) -> float:
        """Raise once past the deadline; else the next pause (growing to 50 ms, cheap when quick)."""
        if time.monotonic() > self._end:
            raise AssertionError(f"not within {self.timeout:g}s: {self.what}; last: {last!r}")
        self.interval = min(self.interval * 2, 0.05)
        return self.interval


def wait_until(probe: Callable[[], T], *, timeout: float = DEADLINE, what: str = "the condition") -> T:
    """Poll ``probe`` until it returns something truthy; return that value."""
    deadline = _Deadline(timeout, what)
    while True:
        value = probe()
        if value:
            return value
        time.sleep(deadline.check(value))


async def eventually(
    probe: Callable[[], T | Awaitable[T]], *, timeout: float = DEADLINE, what: str = "the condition"
) -> T:
    """``wait_until`` for async tests: ``probe`` may be a coroutine function; the loop keeps running."""
    deadline = _Deadline(timeout, what)
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        await asyncio.sleep(deadline.check(value))
