"""DynamicBatcher: gathering, dispatch rules, bounds, timeouts, bad inputs, the worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from fpgaserve.runtime.protocol import InvalidInput, PredictResult, TensorSpec
from fpgaserve.server.batching import DynamicBatcher
from fpgaserve.server.errors import ModelNotReady, PayloadTooLarge, QueueFull
from fpgaserve.server.testing import FakeRuntime, encode_jpeg, sample_image
from tests.server.helpers import MakeBatcher
from tests.support.polling import DEADLINE, eventually


async def _request(batcher: DynamicBatcher, items: list[Any], *, timeout_s: float = 5.0) -> Any:
    with batcher.inflight(len(items)):
        return await batcher.submit(items, timeout_s=timeout_s)


async def test_concurrent_requests_share_batches_up_to_the_maximum(
    make_batcher: MakeBatcher, png: bytes
) -> None:
    runtime = FakeRuntime()
    batcher = make_batcher(runtime)
    results = await asyncio.gather(*(_request(batcher, [png]) for _ in range(8)))
    assert runtime.batch_sizes == [4, 4]
    reference = runtime.predict([png]).outputs[0]
    for result in results:
        np.testing.assert_allclose(result.outputs[0], reference, rtol=1e-4, atol=1e-7)


async def test_staggered_arrivals_wait_for_company_while_others_are_in_flight(
    make_batcher: MakeBatcher, png: bytes
) -> None:
    runtime = FakeRuntime()
    batcher = make_batcher(runtime, max_batch_delay_s=1.0)

    async def late(delay: float) -> Any:
        await asyncio.sleep(delay)
        return await batcher.submit([png], timeout_s=5)

    with batcher.inflight(4):  # four clients are known to be on their way
        await asyncio.gather(*(late(0.01 * i) for i in range(4)))
    assert runtime.batch_sizes == [4]


async def test_a_lone_client_does_not_wait_for_the_batch_delay(make_batcher: MakeBatcher, png: bytes) -> None:
    runtime = FakeRuntime()
    batcher = make_batcher(runtime, max_batch_delay_s=3600.0)  # waiting for it would never end
    for _ in range(3):
        await asyncio.wait_for(_request(batcher, [png]), DEADLINE)
    assert runtime.batch_sizes == [1, 1, 1]


async def test_the_delay_bounds_the_wait_for_inputs_that_never_come(
    make_batcher: MakeBatcher, png: bytes
) -> None:
    runtime = FakeRuntime()
    batcher = make_batcher(runtime, max_batch_delay_s=0.1)
    with batcher.inflight(3):  # three announced, one arrives
        start = time.perf_counter()
        await batcher.submit([png], timeout_s=DEADLINE)
    assert time.perf_counter() - start >= 0.09  # it waited for company, then ran alone
    assert runtime.batch_sizes == [1]


async def test_a_request_larger_than_a_batch_is_split_and_reassembled_in_order(
    make_batcher: MakeBatcher, png: bytes, jpeg: bytes
) -> None:
    runtime = FakeRuntime()
    batcher = make_batcher(runtime, max_batch_size=2)
    items = [png, jpeg, png, jpeg, png]
    result = await _request(batcher, items)
    assert runtime.batch_sizes == [2, 2, 1]
    np.testing.assert_allclose(result.outputs, runtime.predict(items).outputs, rtol=1e-4, atol=1e-7)
    assert result.device_seconds == pytest.approx(3 * 2 * 0.0002 - 0.0002)


async def test_predict_runs_in_the_worker_thread(make_batcher: MakeBatcher, png: bytes) -> None:
    runtime = FakeRuntime()
    await _request(make_batcher(runtime), [png])
    assert runtime.threads == {"fpgaserve-batch_0"}


async def test_a_full_queue_refuses_with_retry_after(make_batcher: MakeBatcher, png: bytes) -> None:
    runtime = FakeRuntime(batch_cost_s=0.3)
    batcher = make_batcher(runtime, max_batch_size=1, max_queue=2)
    running = asyncio.ensure_future(_request(batcher, [png]))
    await eventually(lambda: runtime.batch_sizes, what="the first input in the worker")  # queue empty
    queued = asyncio.ensure_future(_request(batcher, [png, png]))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as refused:
        await _request(batcher, [png])
    assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"
    await asyncio.gather(running, queued)


async def test_a_request_with_more_inputs_than_the_queue_holds_is_refused(
    make_batcher: MakeBatcher, png: bytes
) -> None:
    batcher = make_batcher(FakeRuntime(), max_queue=3)
    with pytest.raises(PayloadTooLarge, match="at most 3"):
        await _request(batcher, [png] * 4)


async def test_a_timed_out_request_leaves_the_queue(make_batcher: MakeBatcher, png: bytes) -> None:
    runtime = FakeRuntime(batch_cost_s=0.2)
    batcher = make_batcher(runtime, max_batch_size=1)
    first = asyncio.ensure_future(_request(batcher, [png]))
    await eventually(lambda: runtime.batch_sizes, what="the first input in the worker")
    with pytest.raises(asyncio.TimeoutError):
        await _request(batcher, [png, png, png], timeout_s=0.05)
    await first
    await _request(batcher, [png])
    assert runtime.batch_sizes == [1, 1]  # the timed-out inputs never ran


async def test_a_bad_input_fails_only_its_own_request(make_batcher: MakeBatcher, png: bytes) -> None:
    whole = encode_jpeg(sample_image(seed=3))
    truncated = whole[: len(whole) * 2 // 3]  # headers intact: passes validate(), fails to decode
    runtime = FakeRuntime()
    batcher = make_batcher(runtime)
    good, bad, also_good = await asyncio.gather(
        _request(batcher, [png]),
        _request(batcher, [png, truncated]),
        _request(batcher, [png]),
        return_exceptions=True,
    )
    assert isinstance(bad, InvalidInput) and bad.index == 1  # its place in its own request
    assert good.outputs.shape == also_good.outputs.shape == (1, 10)
    assert runtime.batch_sizes == [4, 2]


class _Unhelpful(FakeRuntime):
    """Raises InvalidInput without saying which input (allowed by the protocol)."""

    def predict(self, batch: Any) -> PredictResult:
        if any(item == b"bad" for item in batch):
            self.batch_sizes.append(len(batch))
            raise InvalidInput("something in this batch is bad")
        return super().predict(batch)


async def test_an_unattributed_bad_input_is_found_by_running_requests_alone(
    make_batcher: MakeBatcher, png: bytes
) -> None:
    batcher = make_batcher(_Unhelpful())
    good, bad = await asyncio.gather(
        _request(batcher, [png]), _request(batcher, [b"bad"]), return_exceptions=True
    )
    assert isinstance(bad, InvalidInput) and not isinstance(good, BaseException)


class _Broken(FakeRuntime):
    def __init__(self, *, rows: int | None = None) -> None:
        super().__init__()
        self.rows, self.fail = rows, True

    def predict(self, batch: Any) -> PredictResult:
        if self.fail:
            self.fail = False
            if self.rows is None:
                raise RuntimeError("device lost")
            return PredictResult(outputs=np.zeros((self.rows, 10), np.float32), device_seconds=0.0)
        return super().predict(batch)


@pytest.mark.parametrize("rows", [None, 5])
async def test_a_broken_batch_fails_its_requests_and_the_loop_goes_on(
    make_batcher: MakeBatcher, png: bytes, rows: int | None
) -> None:
    batcher = make_batcher(_Broken(rows=rows))
    with pytest.raises(RuntimeError, match="device lost" if rows is None else "shape"):
        await _request(batcher, [png])
    assert (await _request(batcher, [png])).outputs.shape == (1, 10)


class _Summer:
    """Sums vectors of any length: inputs of different shapes must not be stacked together."""

    name, version, labels = "summer", "1", None
    input_spec = TensorSpec(name="x", dtype="float32", shape=(None,))
    output_spec = TensorSpec(name="sum", dtype="float32", shape=(1,))

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def validate(self, item: bytes | npt.NDArray[np.float32], *, index: int) -> None:
        pass

    def predict(self, batch: Any) -> PredictResult:
        self.batch_sizes.append(len(batch))
        return PredictResult(outputs=np.asarray(batch).sum(axis=1, keepdims=True), device_seconds=0.0)

    def close(self) -> None:
        pass


async def test_tensors_of_different_shapes_go_in_different_batches(make_batcher: MakeBatcher) -> None:
    runtime = _Summer()
    batcher = make_batcher(runtime)
    vectors = [np.ones(n, np.float32) for n in (2, 3, 2, 3)]
    results = await asyncio.gather(*(_request(batcher, [v]) for v in vectors))
    assert [float(r.outputs[0, 0]) for r in results] == [2, 3, 2, 3]
    assert sorted(runtime.batch_sizes) == [2, 2]


async def test_close_finishes_the_running_batch_and_fails_the_queued_ones(
    make_batcher: MakeBatcher, png: bytes
) -> None:
    runtime = FakeRuntime(batch_cost_s=0.2)
    batcher = make_batcher(runtime, max_batch_size=1)
    running = asyncio.ensure_future(_request(batcher, [png]))
    await eventually(lambda: runtime.batch_sizes, what="the first input in the worker")
    queued = asyncio.ensure_future(_request(batcher, [png]))
    await asyncio.sleep(0)
    await batcher.close()
    assert (await running).outputs.shape == (1, 10)
    with pytest.raises(ModelNotReady):
        await queued
    with pytest.raises(ModelNotReady, match="shutting down"):
        await _request(batcher, [png])


async def test_the_worker_runs_on_idle_once_after_input_stops(make_batcher: MakeBatcher, png: bytes) -> None:
    runtime = FakeRuntime()
    threads: list[str] = []
    batcher = make_batcher(
        runtime, idle_s=0.05, on_idle=lambda: threads.append(threading.current_thread().name)
    )
    await asyncio.sleep(0.2)
    assert threads == []  # nothing ran yet: nothing to give back
    await _request(batcher, [png])
    await eventually(lambda: len(threads) == 1, what="the idle clean-up")
    assert threads[0].startswith("fpgaserve-batch")  # the worker thread: never beside a batch
    await asyncio.sleep(0.2)
    assert len(threads) == 1  # once per idle spell
    await _request(batcher, [png])
    await eventually(lambda: len(threads) == 2, what="the clean-up after the next batch")


async def test_a_steady_stream_is_not_interrupted_by_the_idle_clean_up(
    make_batcher: MakeBatcher, png: bytes
) -> None:
    runtime = FakeRuntime()
    calls: list[int] = []
    batcher = make_batcher(runtime, idle_s=3600.0, on_idle=lambda: calls.append(1))
    for _ in range(5):
        await _request(batcher, [png])
    assert calls == [] and runtime.batch_sizes == [1] * 5


async def test_a_failing_idle_clean_up_leaves_batching_working(make_batcher: MakeBatcher, png: bytes) -> None:
    runtime = FakeRuntime()
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise OSError("no")

    batcher = make_batcher(runtime, idle_s=0.02, on_idle=broken)
    await _request(batcher, [png])
    await eventually(lambda: calls == [1], what="the clean-up")
    result = await _request(batcher, [png])
    assert result.outputs.shape[0] == 1
