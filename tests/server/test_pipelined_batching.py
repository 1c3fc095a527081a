"""DynamicBatcher over a StagedRuntime: prepare and complete overlap, in order, isolated, bounded."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from fpgaserve.runtime.protocol import InvalidInput, PredictResult, PreparedBatch, StagedRuntime, TensorSpec
from fpgaserve.server.batching import DynamicBatcher
from fpgaserve.server.errors import ModelNotReady
from tests.server.helpers import MakeBatcher
from tests.support.polling import DEADLINE, eventually

CLASSES = 3


class Staged:
    """A staged runtime over float32 vectors whose answer for an input depends on that input alone.

    ``prepare`` doubles the vectors and ``complete`` returns them: each output row is ``2 * x``, so a
    row that reaches the wrong request, or the wrong place in it, shows. Gates (threading events) hold
    a step until a test opens them, to catch a batch in that step. A vector whose first value is
    negative is bad: ``prepare`` names it, except -2, which only ``complete`` finds.
    """

    name, version, labels = "staged", "1", None
    input_spec = TensorSpec(name="x", dtype="float32", shape=(CLASSES,))
    output_spec = TensorSpec(name="y", dtype="float32", shape=(CLASSES,))

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, int, str]] = []  # (step, batch id, thread) in the order they began
        self.prepared: list[int] = []  # batch ids prepared and not yet completed
        self.most_prepared = 0
        self.prepare_gate = threading.Event()
        self.complete_gate = threading.Event()
        self.prepare_gate.set()
        self.complete_gate.set()
        self.broken: set[int] = set()  # batch ids whose complete raises RuntimeError
        self.complete_seconds = 0.0  # a cost per input, spent in complete
        self.sizes: list[int] = []  # batch sizes, in the order prepared
        self.completed: list[float] = []  # each completed batch's first value, in completion order
        self._ids = 0

    def validate(self, item: Any, *, index: int) -> None:
        pass

    def predict(self, batch: Any) -> PredictResult:
        return self.complete(self.prepare(batch))

    def prepare(self, batch: Any) -> PreparedBatch:
        x = np.asarray(batch, np.float32)
        with self.lock:
            self._ids += 1
            ident = self._ids
            self.log.append(("prepare", ident, threading.current_thread().name))
            self.sizes.append(len(x))
        assert self.prepare_gate.wait(DEADLINE)
        bad = [i for i, row in enumerate(x) if row[0] < 0 and row[0] != -2]
        if bad:
            raise InvalidInput("negative", index=bad[0])
        with self.lock:
            self.prepared.append(ident)
            self.most_prepared = max(self.most_prepared, len(self.prepared))
        return PreparedBatch(values=(ident, 2 * x), size=len(x), device_seconds=0.001)

    def complete(self, prepared: PreparedBatch) -> PredictResult:
        ident, x = prepared.values
        with self.lock:
            self.log.append(("complete", ident, threading.current_thread().name))
        assert self.complete_gate.wait(DEADLINE)
        time.sleep(self.complete_seconds * len(x))
        with self.lock:
            self.prepared.remove(ident)
            self.completed.append(float(x[0, 0]) / 2)
        if ident in self.broken:
            raise RuntimeError("device lost")
        bad = [i for i, row in enumerate(x) if row[0] == -4]
        if bad:
            raise InvalidInput("found on the device", index=bad[0])
        return PredictResult(outputs=x, device_seconds=0.002 * len(x))

    def close(self) -> None:
        pass

    def steps(self, step: str) -> list[int]:
        with self.lock:
            return [ident for s, ident, _ in self.log if s == step]


def _vec(value: float) -> npt.NDArray[np.float32]:
    return np.array([value, value + 0.25, value + 0.5], np.float32)


async def _request(batcher: DynamicBatcher, items: list[Any]) -> Any:
    with batcher.inflight(len(items)):
        return await batcher.submit(items, timeout_s=DEADLINE)


async def _busy_device(batcher: DynamicBatcher, runtime: Staged) -> asyncio.Future[Any]:
    """A batch held on the device (its complete waits for the gate): the next batches are pipelined.
    (On an idle device a batch runs ``predict`` in the worker thread: nothing to overlap with.)"""
    runtime.complete_gate.clear()
    held = asyncio.ensure_future(_request(batcher, [_vec(100)]))
    await eventually(lambda: runtime.steps("complete") == [1], what="batch 1 on the device")
    return held


def test_the_fake_is_a_staged_runtime() -> None:
    assert isinstance(Staged(), StagedRuntime)


async def test_on_an_idle_device_a_batch_runs_predict_in_the_worker_thread(make_batcher: MakeBatcher) -> None:
    runtime = Staged()
    batcher = make_batcher(runtime)
    for value in range(3):  # a lone client: no prepare thread, no extra hop
        np.testing.assert_array_equal((await _request(batcher, [_vec(value)])).outputs, [2 * _vec(value)])
    assert {name for _, _, name in runtime.log} == {"fpgaserve-batch_0"}


async def test_prepare_runs_beside_the_previous_batchs_complete(make_batcher: MakeBatcher) -> None:
    runtime = Staged()
    batcher = make_batcher(runtime, max_batch_size=1)
    first = await _busy_device(batcher, runtime)
    second = asyncio.ensure_future(_request(batcher, [_vec(2)]))
    # Batch 2 is prepared while batch 1 is still held in complete, but waits for it to finish.
    await eventually(lambda: runtime.prepared == [1, 2], what="batch 2 prepared beside batch 1")
    assert runtime.steps("complete") == [1]
    runtime.complete_gate.set()
    one, two = await asyncio.gather(first, second)
    np.testing.assert_array_equal(one.outputs, [2 * _vec(100)])
    np.testing.assert_array_equal(two.outputs, [2 * _vec(2)])
    assert [(step, ident, name) for step, ident, name in runtime.log if ident == 2] == [
        ("prepare", 2, "fpgaserve-prepare_0"),
        ("complete", 2, "fpgaserve-batch_0"),
    ]


async def test_answers_reach_their_requests_in_order_and_memory_stays_bounded(
    make_batcher: MakeBatcher,
) -> None:
    runtime = Staged()
    runtime.complete_seconds = 0.002  # the device busy now and then, so some batches are pipelined
    batcher = make_batcher(runtime, max_batch_size=3)
    requests = [[_vec(10 * r + i) for i in range(1 + r % 4)] for r in range(24)]  # some span batches
    results = await asyncio.gather(*(_request(batcher, items) for items in requests))
    for items, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result.outputs, 2 * np.stack(items))  # exact: no row misplaced
    assert runtime.completed == sorted(runtime.completed)  # batches complete in the order formed
    assert any(name == "fpgaserve-prepare_0" for _, _, name in runtime.log)
    assert runtime.most_prepared <= 2  # one batch on the device, one prepared: no more
    sample = batcher.metrics.registry.get_sample_value
    assert sample("fpgaserve_inputs_total") == sum(len(items) for items in requests)
    prepared_apart = sum(1 for step, _, name in runtime.log if name == "fpgaserve-prepare_0")
    assert sample("fpgaserve_batch_prepare_seconds_count") == prepared_apart


async def test_a_bad_input_found_by_prepare_fails_only_its_own_request(make_batcher: MakeBatcher) -> None:
    runtime = Staged()
    batcher = make_batcher(runtime, max_batch_size=4)
    held = await _busy_device(batcher, runtime)
    runtime.prepare_gate.clear()  # so that the next three requests share one batch
    good = asyncio.ensure_future(_request(batcher, [_vec(1)]))
    bad = asyncio.ensure_future(_request(batcher, [_vec(2), _vec(-1)]))
    also_good = asyncio.ensure_future(_request(batcher, [_vec(3)]))
    await eventually(lambda: runtime.steps("prepare") == [1, 2], what="batch 2 in prepare")
    runtime.prepare_gate.set()
    runtime.complete_gate.set()
    with pytest.raises(InvalidInput, match="input 1: negative"):
        await bad
    for future, value in ((held, 100), (good, 1), (also_good, 3)):
        np.testing.assert_array_equal((await future).outputs, [2 * _vec(value)])
    assert runtime.sizes[1] == 4  # the three requests were one batch


async def test_a_bad_input_found_by_complete_fails_only_its_own_request(make_batcher: MakeBatcher) -> None:
    runtime = Staged()
    batcher = make_batcher(runtime, max_batch_size=4)
    held = await _busy_device(batcher, runtime)
    both = asyncio.gather(
        _request(batcher, [_vec(1)]), _request(batcher, [_vec(5), _vec(-2)]), return_exceptions=True
    )
    await eventually(lambda: runtime.prepared == [1, 2], what="the pair prepared")
    runtime.complete_gate.set()
    good, bad = await both
    assert isinstance(bad, InvalidInput) and bad.index == 1
    np.testing.assert_array_equal(good.outputs, [2 * _vec(1)])
    await held


async def test_a_broken_complete_fails_its_requests_and_the_pipeline_goes_on(
    make_batcher: MakeBatcher,
) -> None:
    runtime = Staged()
    batcher = make_batcher(runtime, max_batch_size=1)
    held = await _busy_device(batcher, runtime)
    broken = asyncio.ensure_future(_request(batcher, [_vec(1)]))
    await eventually(lambda: runtime.prepared == [1, 2], what="batch 2 prepared")
    runtime.broken = {2}
    runtime.complete_gate.set()
    await held
    with pytest.raises(RuntimeError, match="device lost"):
        await broken
    np.testing.assert_array_equal((await _request(batcher, [_vec(2)])).outputs, [2 * _vec(2)])


@pytest.mark.parametrize("first", ["prepare", "complete"])
async def test_close_finishes_the_batches_in_both_steps_and_fails_the_queued_ones(
    make_batcher: MakeBatcher, first: str
) -> None:
    runtime = Staged()
    batcher = make_batcher(runtime, max_batch_size=1)
    on_device = await _busy_device(batcher, runtime)
    runtime.prepare_gate.clear()
    in_prepare = asyncio.ensure_future(_request(batcher, [_vec(2)]))
    await eventually(lambda: runtime.steps("prepare") == [1, 2], what="batch 2 in prepare")
    queued = asyncio.ensure_future(_request(batcher, [_vec(3)]))
    depth = batcher.metrics.registry.get_sample_value
    await eventually(lambda: depth("fpgaserve_queue_depth") == 1, what="batch 3 queued")
    closing = asyncio.ensure_future(batcher.close())
    with pytest.raises(ModelNotReady, match="shutting down"):
        await queued
    gates = [runtime.prepare_gate, runtime.complete_gate]
    for gate in gates if first == "prepare" else gates[::-1]:
        gate.set()
    await asyncio.wait_for(closing, DEADLINE)
    np.testing.assert_array_equal((await on_device).outputs, [2 * _vec(100)])
    np.testing.assert_array_equal((await in_prepare).outputs, [2 * _vec(2)])
    assert runtime.prepared == []  # nothing left half done
    assert not any(t.name.startswith(("fpgaserve-prepare", "fpgaserve-batch")) for t in threading.enumerate())


async def test_the_idle_clean_up_waits_for_the_batch_on_the_device(make_batcher: MakeBatcher) -> None:
    runtime = Staged()
    calls: list[list[int]] = []
    batcher = make_batcher(runtime, idle_s=0.01, on_idle=lambda: calls.append(list(runtime.prepared)))
    await _request(batcher, [_vec(1)])
    await eventually(lambda: calls, what="the idle clean-up")
    assert calls == [[]]  # it ran after the batch left the device, not during


async def test_while_the_device_is_busy_the_next_batch_waits_for_company(make_batcher: MakeBatcher) -> None:
    # Inputs still on their way (the clients of the batch just answered) join the next batch until
    # the device is about to be free, even past the batch delay; otherwise 16 clients made batches of
    # about 5 instead of 8.
    runtime = Staged()
    batcher = make_batcher(runtime, max_batch_size=2, max_batch_delay_s=0.001)
    runtime.complete_seconds = 1.0  # one batch of one: the estimate of a device step is 1 s per input
    await _request(batcher, [_vec(0)])
    runtime.complete_seconds = 0.0
    runtime.complete_gate.clear()
    with batcher.inflight(1):  # a fourth client: the next batch's target is full (2)
        on_device = asyncio.gather(_request(batcher, [_vec(1)]), _request(batcher, [_vec(2)]))
        await eventually(lambda: runtime.steps("complete") == [1, 2], what="a batch of two on the device")
        first = asyncio.ensure_future(_request(batcher, [_vec(3)]))
        await asyncio.sleep(0.05)  # far past the batch delay, far within the device's estimated 2 s
        second = asyncio.ensure_future(_request(batcher, [_vec(4)]))
        await eventually(lambda: runtime.steps("prepare") == [1, 2, 3], what="the next batch prepared")
        runtime.complete_gate.set()
        await asyncio.gather(on_device, first, second)
    assert runtime.sizes == [1, 2, 2]
