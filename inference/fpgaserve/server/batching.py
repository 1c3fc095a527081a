"""Dynamic batching: inputs of concurrent requests gathered into batches run in a worker thread.

Role: the data plane submits each request's validated inputs; ``DynamicBatcher`` queues them
(bounded: a full queue refuses the whole request with ``QueueFull``), forms batches of up to
``max_batch_size`` inputs and runs ``runtime.predict`` in one worker thread, so compute never blocks
the event loop. A batch is dispatched when it is full, when it holds as many inputs as were recently
in flight (a lone client never waits for company), or when its oldest input has waited
``max_batch_delay_s``. A bad input found by ``predict`` fails only its own request; the rest of the
batch is run again without it. What is queued (a request's ``Group``, one ``Entry`` per input) and
how answers reach their requests live in ``batch_requests``.

A ``StagedRuntime`` (the package runtime) runs as a two-step pipeline instead: ``prepare`` (decode,
resize, normalize: one core, under the GIL) in a thread ``fpgaserve-prepare`` while the previous
batch's ``complete`` (the device program on every core, the classifier) runs in the worker thread,
so the core a plain ``predict`` leaves idle in its host step works. One batch per step (bounded
memory), completed in the order formed, outputs bit-identical to ``predict``'s.

After a batch, once no input has come for ``idle_s`` seconds, the worker thread runs ``on_idle``
once (the server's: ``npu.allocator.trim_heap``, giving a burst's activation buffers back to the
kernel); it runs again only after another batch. In the worker thread, so that it never overlaps a
batch; an input that comes meanwhile waits for it (milliseconds).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from fpgaserve.runtime.protocol import InvalidInput, ModelRuntime, PreparedBatch, StagedRuntime
from fpgaserve.server.batch_requests import (
    BatchOutput,
    Entry,
    Group,
    Item,
    deliver,
    isolate,
    payloads,
    stackable,
)
from fpgaserve.server.errors import ModelNotReady, PayloadTooLarge, QueueFull
from fpgaserve.server.metrics import ServerMetrics

__all__ = ["DynamicBatcher"]

logger = logging.getLogger(__name__)

_R = TypeVar("_R")  # what a step returns for one part


class DynamicBatcher:
    """Batches inputs for one runtime. ``start`` in the app's start-up, ``close`` in its cleanup."""

    def __init__(
        self,
        *,
        runtime: ModelRuntime,
        metrics: ServerMetrics,
        max_batch_size: int,
        max_batch_delay_s: float,
        max_queue: int,
        idle_s: float = 0.0,
        on_idle: Callable[[], object] | None = None,
    ) -> None:
        """``on_idle`` runs in the worker thread after ``idle_s`` seconds without input (0: never)."""
        self.runtime = runtime
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self.max_queue = max_queue
        self._queue: collections.deque[Entry] = collections.deque()
        self._wakeup = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None  # the worker: predict, or complete
        self._prepare_executor: ThreadPoolExecutor | None = None  # a staged runtime's prepare
        self._staged = runtime if isinstance(runtime, StagedRuntime) else None
        self._completing: asyncio.Task[None] | None = None  # the batch in a staged runtime's complete
        self._device_end = 0.0  # loop time when the batch in complete is expected to end
        self._prepare_per_input = 0.0  # seconds, recent batches (smoothed)
        self._complete_per_input = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._inflight = 0  # inputs between ``inflight()`` entry and their answer
        self._peak = 1  # most inputs in flight since the last dispatch
        self.idle_s = idle_s
        self.on_idle = on_idle
        self._ran = False  # a batch ran since on_idle last did

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fpgaserve-batch")
        if self._staged is not None:
            self._prepare_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fpgaserve-prepare")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fpgaserve-batcher")

    async def close(self) -> None:
        """Refuse new inputs, fail the queued ones, let the running batch finish, stop the thread."""
        self._closing = True
        while self._queue:
            self._queue.popleft().group.fail(ModelNotReady("the server is shutting down"))
        self.metrics.queue_depth.set(0)
        self._wakeup.set()
        if self._task is not None:
            await self._task
        for executor in (self._executor, self._prepare_executor):
            if executor is not None:
                await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
        self._executor = self._prepare_executor = None

    # -- submitting --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def inflight(self, count: int) -> Iterator[None]:
        """Count ``count`` inputs as in flight (validating, queued or running) while inside."""
        self._inflight += count
        self._peak = max(self._peak, self._inflight)
        self.metrics.inflight.inc(count)
        try:
            yield
        finally:
            self._inflight -= count
            self.metrics.inflight.dec(count)

    async def submit(self, items: list[Item], *, timeout_s: float | None) -> BatchOutput:
        """Queue one request's inputs and wait for their outputs (``InferenceTimeout`` is the caller's)."""
        if self._closing or self._task is None:
            raise ModelNotReady(
                "the server is shutting down" if self._closing else "the batcher is not running"
            )
        if len(items) > self.max_queue:
            raise PayloadTooLarge(
                f"{len(items)} inputs in one request; this server takes at most {self.max_queue} "
                "(--max-queue): split the request"
            )
        if len(self._queue) + len(items) > self.max_queue:
            self.metrics.rejected.labels("queue_full").inc(len(items))
            raise QueueFull(f"the queue is full ({self.max_queue} inputs waiting); retry shortly")
        loop = asyncio.get_running_loop()
        group = Group(future=loop.create_future(), rows=[None] * len(items), pending=len(items))
        for index, payload in enumerate(items):
            self._queue.append(Entry(group=group, index=index, payload=payload))
        self.metrics.queue_depth.set(len(self._queue))
        self._wakeup.set()
        try:
            return await asyncio.wait_for(group.future, timeout_s)
        except asyncio.TimeoutError:
            self.metrics.rejected.labels("timeout").inc(len(items))
            raise
        finally:
            if group.pending:  # timed out, cancelled or failed: nothing queued may run for it
                self._drop(group)

    def _drop(self, group: Group) -> None:
        if any(entry.group is group for entry in self._queue):
            self._queue = collections.deque(e for e in self._queue if e.group is not group)
            self.metrics.queue_depth.set(len(self._queue))

    # -- the batching loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._closing:
                batch = await self._collect()
                if not batch:
                    continue  # closing
                step = self._execute(batch) if self._staged is None else self._pipe(batch)
                await self._guarded(batch, step)
        finally:
            if self._completing is not None:  # the last batch on the device finishes (or is cancelled)
                await self._completing

    async def _guarded(self, batch: list[Entry], step: Awaitable[None]) -> None:
        """Await one step of ``batch``; whatever it raises fails its requests, never the loop."""
        try:
            await step
        except asyncio.CancelledError:
            for entry in batch:
                entry.group.fail(ModelNotReady("the server is shutting down"))
            raise
        except Exception as exc:  # a broken runtime must not stop the loop
            logger.exception("batch of %d failed", len(batch))
            for entry in batch:
                entry.group.fail(exc)

    async def _pipe(self, batch: list[Entry]) -> None:
        """Prepare ``batch`` while the previous batch completes, then start its own complete. With the
        device idle there is nothing to overlap: ``predict`` in the worker thread, one hop fewer (a
        lone client's latency), while the next batch may be prepared beside it."""
        if self._completing is None or self._completing.done():
            self._start_device(batch, self._execute(batch), len(batch))
            return
        ready = await self._prepare(batch)
        await self._completing  # one batch on the device at a time, in order
        if ready:
            self._start_device(batch, self._complete(ready), sum(p.size for _, p in ready))

    def _start_device(self, batch: list[Entry], step: Awaitable[None], inputs: int) -> None:
        loop = asyncio.get_running_loop()
        self._completing = loop.create_task(self._guarded(batch, step), name="fpgaserve-complete")
        self._completing.add_done_callback(lambda _: self._wakeup.set())  # _collect may hold for it
        self._device_end = loop.time() + self._complete_per_input * inputs

    def _hold_until(self, target: int) -> float:
        """Loop time until which the next batch may wait for ``target`` inputs, past the batch delay:
        the device's estimated end less the time to prepare them (0 when the device is idle). At the
        delay, 16 clients made batches of about 5, the rest of their inputs still on the way back."""
        if self._completing is None or self._completing.done():
            return 0.0
        return self._device_end - self._prepare_per_input * target

    async def _collect(self) -> list[Entry]:
        loop = asyncio.get_running_loop()
        idle_at: float | None = None  # when on_idle is due: idle_s after a batch ran and no input came
        while not self._queue:
            if self._closing:
                return []
            if idle_at is None and self._ran and self.on_idle is not None and self.idle_s > 0:
                idle_at = loop.time() + self.idle_s
            if idle_at is not None and loop.time() >= idle_at:
                self._ran, idle_at = False, None
                await self._idle(loop)
                continue
            await self._sleep(loop, idle_at)
        target = min(self.max_batch_size, self._peak)
        # perf_counter and the loop clock differ in origin; convert the oldest input's age once.
        deadline = loop.time() + self.max_batch_delay_s - (time.perf_counter() - self._queue[0].enqueued)
        while len(self._queue) < target and (until := max(deadline, self._hold_until(target))) > loop.time():
            await self._sleep(loop, until)
            if not self._queue:  # everything queued was cancelled meanwhile, or we are closing
                return await self._collect()
        batch = [self._queue.popleft()]
        skipped: list[Entry] = []  # tensors of another shape wait for a batch of their own
        while self._queue and len(batch) < self.max_batch_size:
            entry = self._queue.popleft()
            (batch if stackable(batch[0].payload, entry.payload) else skipped).append(entry)
        self._queue.extendleft(reversed(skipped))
        self.metrics.queue_depth.set(len(self._queue))
        self._peak = max(1, self._inflight)  # measure concurrency afresh for the next batch
        return batch

    async def _sleep(self, loop: asyncio.AbstractEventLoop, until: float | None) -> None:
        """Wait for a wake-up (an input, a batch off the device, closing) or until loop time ``until``.
        A timer, not ``asyncio.wait_for``: that made a task per wait, after every lone request."""
        self._wakeup.clear()
        timer = None if until is None else loop.call_at(until, self._wakeup.set)
        try:
            await self._wakeup.wait()
        finally:
            if timer is not None:
                timer.cancel()

    async def _idle(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.on_idle is not None
        if self._completing is not None:  # done by now (idle_s passed), but never overlap a batch
            await self._completing
        try:
            await loop.run_in_executor(self._executor, self.on_idle)
        except Exception:  # a failed clean-up must not stop the batching loop
            logger.warning("the idle clean-up failed", exc_info=True)

    async def _execute(self, batch: list[Entry]) -> None:
        """Run ``batch`` with ``predict`` in the worker thread, bad inputs isolated."""
        self._ran = True
        self._observe_wait(batch)
        await self._isolated(batch, self._executor, self._predict, self._completed)

    async def _prepare(self, batch: list[Entry]) -> list[tuple[list[Entry], PreparedBatch]]:
        """A staged runtime's host step in its thread; a bad input fails its request, the rest are
        prepared again without it."""
        self._ran = True
        self._observe_wait(batch)
        ready: list[tuple[list[Entry], PreparedBatch]] = []

        def prepared(part: list[Entry], result: PreparedBatch, seconds: float) -> None:
            self.metrics.prepare_seconds.observe(seconds)
            self._prepare_per_input = _smoothed(self._prepare_per_input, seconds / len(part))
            ready.append((part, result))

        await self._isolated(batch, self._prepare_executor, self._prepare_part, prepared)
        return ready

    async def _complete(self, ready: list[tuple[list[Entry], PreparedBatch]]) -> None:
        """A staged runtime's device step in the worker thread, part after part."""
        assert self._staged is not None
        loop = asyncio.get_running_loop()
        for part, prepared in ready:
            start = time.perf_counter()
            try:
                result = await loop.run_in_executor(self._executor, self._staged.complete, prepared)
            except InvalidInput as exc:  # found on the device (rare): the others run again, unstaged
                for rest in isolate(part, exc):
                    await self._execute(rest)
                continue
            outputs = self._checked(result.outputs, len(part))
            self._completed(part, (outputs, float(result.device_seconds)), time.perf_counter() - start)

    async def _isolated(
        self,
        batch: list[Entry],
        executor: ThreadPoolExecutor | None,
        call: Callable[[list[Entry]], _R],
        done: Callable[[list[Entry], _R, float], None],
    ) -> None:
        """``call`` on ``batch`` in ``executor``, then ``done`` with each part that ran and its seconds.
        A bad input fails its own request, and the rest of its part runs again (``_isolate``)."""
        loop = asyncio.get_running_loop()
        work = [batch]
        while work:
            part = work.pop()
            start = time.perf_counter()
            try:
                result = await loop.run_in_executor(executor, call, part)
            except InvalidInput as exc:
                work.extend(isolate(part, exc))
                continue
            done(part, result, time.perf_counter() - start)

    def _completed(
        self, part: list[Entry], result: tuple[npt.NDArray[np.float32], float], seconds: float
    ) -> None:
        """A part's device step is done (``predict`` or ``complete``): its metrics, then its answers."""
        self.metrics.batch_seconds.observe(seconds)
        self._complete_per_input = _smoothed(self._complete_per_input, seconds / len(part))
        self._deliver(part, *result)

    def _prepare_part(self, part: list[Entry]) -> PreparedBatch:
        """Prepare thread: a staged runtime's ``prepare`` of one part."""
        assert self._staged is not None
        return self._staged.prepare(payloads(part))

    def _observe_wait(self, batch: list[Entry]) -> None:
        for entry in batch:
            self.metrics.queue_wait_seconds.observe(time.perf_counter() - entry.enqueued)

    def _predict(self, part: list[Entry]) -> tuple[npt.NDArray[np.float32], float]:
        """Worker thread: one ``runtime.predict`` call, its output checked against the batch."""
        result = self.runtime.predict(payloads(part))
        return self._checked(result.outputs, len(part)), float(result.device_seconds)

    def _checked(self, outputs: object, size: int) -> npt.NDArray[np.float32]:
        array = np.asarray(outputs, dtype=np.float32)
        if array.ndim < 1 or array.shape[0] != size:
            raise RuntimeError(
                f"runtime {self.runtime.name!r} returned outputs of shape {array.shape} for a batch of {size}"
            )
        return array

    def _deliver(self, batch: list[Entry], outputs: npt.NDArray[np.float32], device_seconds: float) -> None:
        self.metrics.batch_size.observe(len(batch))
        self.metrics.inputs.inc(len(batch))
        self.metrics.device_seconds.inc(device_seconds)
        self.metrics.batch_device_seconds.observe(device_seconds)
        deliver(batch, outputs, device_seconds)


def _smoothed(previous: float, sample: float) -> float:
    """An exponentially weighted mean that follows the last few batches (the first sample as is)."""
    return sample if previous == 0.0 else 0.7 * previous + 0.3 * sample
