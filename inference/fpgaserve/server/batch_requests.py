"""A request's inputs on their way through the batcher: what is queued, and how answers come back.

Role: the data types ``DynamicBatcher`` (``server/batching.py``) queues and delivers, apart from its
scheduling. A request's inputs become one ``Group`` (its future and its output rows) and one
``Entry`` per input; a batch is a list of entries, from any number of requests. The helpers here are
what a batch needs without the batcher's state: the runtime's view of it (``payloads``), which
inputs may share it (``stackable``), and which requests a bad input fails (``isolate``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fpgaserve.runtime.protocol import InvalidInput

__all__ = ["BatchOutput", "Entry", "Group", "Item", "deliver", "isolate", "payloads", "stackable"]

Item = bytes | npt.NDArray[np.float32]  # one input: an encoded image, or one float32 tensor


@dataclass(frozen=True)
class BatchOutput:
    """The outputs of one request's inputs, in order, and the modeled device time of its batches."""

    outputs: npt.NDArray[np.float32]  # (inputs, *output_spec.shape)
    device_seconds: float


@dataclass(eq=False)
class Group:
    """The inputs of one request; its future resolves once every input has its output row."""

    future: asyncio.Future[BatchOutput]
    rows: list[npt.NDArray[np.float32] | None]
    pending: int
    device_seconds: float = 0.0

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def put(self, index: int, row: npt.NDArray[np.float32]) -> None:
        """Input ``index``'s output row; the last one resolves the future."""
        self.rows[index] = row
        self.pending -= 1
        if self.pending == 0 and not self.future.done():
            rows = [r for r in self.rows if r is not None]
            self.future.set_result(BatchOutput(outputs=np.stack(rows), device_seconds=self.device_seconds))


@dataclass(eq=False)
class Entry:
    """One input of a request, queued for a batch."""

    group: Group
    index: int  # position of the input in its request
    payload: Item
    enqueued: float = field(default_factory=time.perf_counter)


def deliver(batch: list[Entry], outputs: npt.NDArray[np.float32], device_seconds: float) -> None:
    """Each entry's output row to its request; each request counts the batch's device time once."""
    seen: set[int] = set()
    for entry, row in zip(batch, outputs, strict=True):
        group = entry.group
        if id(group) not in seen:
            seen.add(id(group))
            group.device_seconds += device_seconds
        group.put(entry.index, row)


def isolate(batch: list[Entry], exc: InvalidInput) -> list[list[Entry]]:
    """Fail the request that holds the bad input; return the parts of the batch to run again."""
    if exc.index is not None and 0 <= exc.index < len(batch):
        culprit = batch[exc.index]
        # exc.index counts inputs of the batch; the request knows its input by culprit.index.
        culprit.group.fail(InvalidInput(exc.message, index=culprit.index))
        rest = [e for e in batch if e.group is not culprit.group]
        return [rest] if rest else []
    groups = list(dict.fromkeys(e.group for e in batch))
    if len(groups) == 1:
        groups[0].fail(InvalidInput(exc.message))
        return []
    # The runtime did not say which input was bad: run each request alone to find out (rare).
    return [[e for e in batch if e.group is group] for group in groups]


def payloads(part: list[Entry]) -> list[bytes] | npt.NDArray[np.float32]:
    """The batch a runtime takes: encoded images as a list, tensors stacked."""
    if isinstance(part[0].payload, bytes):
        return [e.payload for e in part if isinstance(e.payload, bytes)]
    return np.stack([e.payload for e in part]).astype(np.float32, copy=False)


def stackable(a: Item, b: Item) -> bool:
    """Whether two inputs may share a batch: both images, or tensors of one shape."""
    if isinstance(a, bytes) or isinstance(b, bytes):
        return isinstance(a, bytes) and isinstance(b, bytes)
    return a.shape == b.shape
