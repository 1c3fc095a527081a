"""DataPlane: loading and closing the model, readiness, validation off the loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from fpgaserve.runtime.protocol import InvalidInput
from fpgaserve.server.dataplane import INLINE_CHECK_BYTES, DataPlane, ModelState
from fpgaserve.server.errors import InvalidRequest, ModelNotFound, ModelNotReady
from fpgaserve.server.metrics import ServerMetrics
from fpgaserve.server.settings import ServerSettings
from fpgaserve.server.testing import FakeRuntime
from tests.support.polling import eventually


def _plane(**settings: Any) -> DataPlane:
    return DataPlane(settings=ServerSettings(**settings), metrics=ServerMetrics())


async def test_a_loaded_runtime_is_warmed_up_served_and_closed(png: bytes) -> None:
    runtime = FakeRuntime()
    plane = _plane()
    await plane.load(runtime)
    assert plane.ready and runtime.batch_sizes == [2]  # the warm-up: one small batch
    assert plane.model("fake", version="1") is runtime
    result = await plane.infer([png, png])
    assert result.outputs.shape == (2, 10)
    with pytest.raises(ModelNotFound, match="serves 'fake'"):
        plane.model("other")
    with pytest.raises(ModelNotFound, match="version '1'"):
        plane.model("fake", version="2")
    with pytest.raises(InvalidRequest, match="no inputs"):
        await plane.infer([])
    plane.drain()
    assert plane.state is ModelState.DRAINING and not plane.ready
    assert plane.not_ready_reason() == "the server is shutting down"
    # Draining is unready but still serving: requests already on their way are answered.
    assert len((await plane.infer([png])).outputs) == 1
    await plane.close()
    assert runtime.closed
    with pytest.raises(ModelNotReady):
        await plane.infer([png])


async def test_large_inputs_are_validated_in_a_thread_small_ones_inline_and_the_input_is_named(
    png: bytes,
) -> None:
    seen: list[str] = []

    class Watched(FakeRuntime):
        def validate(self, item: Any, *, index: int) -> None:
            seen.append(threading.current_thread().name)
            super().validate(item, index=index)

    plane = _plane()
    await plane.load(Watched())
    assert len(png) < INLINE_CHECK_BYTES
    seen.clear()
    with pytest.raises(InvalidInput) as bad:
        await plane.infer([png, b"junk"])
    assert bad.value.index == 1
    assert seen == [threading.current_thread().name] * 2  # the event loop's own thread
    seen.clear()
    large = png + b"\0" * INLINE_CHECK_BYTES  # trailing bytes after IEND: still a valid PNG header
    with pytest.raises(InvalidInput) as bad:
        await plane.infer([large, b"junk"])
    assert bad.value.index == 1
    assert seen and all(name.startswith("fpgaserve-validate") for name in seen)
    await plane.close()


async def test_the_kind_of_input_is_checked_against_the_spec(png: bytes) -> None:
    plane = _plane()
    await plane.load(FakeRuntime(input_kind="tensor", tensor_size=2))
    with pytest.raises(InvalidInput, match="not encoded images"):
        await plane.infer([png])
    with pytest.raises(InvalidInput, match=r"shape \(2\)"):
        await plane.infer([np.zeros(3, np.float32)])
    await plane.close()


async def test_a_loader_runs_in_a_thread_and_a_close_during_loading_still_closes_it() -> None:
    release = threading.Event()
    runtime = FakeRuntime()

    started = threading.Event()

    def load() -> FakeRuntime:
        started.set()
        release.wait(10)
        return runtime

    plane = _plane()
    loading = asyncio.ensure_future(plane.load(load))
    await eventually(started.is_set, what="the loader running in its thread")
    assert plane.state is ModelState.LOADING and "still loading" in plane.not_ready_reason()
    loading.cancel()
    release.set()
    await plane.close()
    assert runtime.closed


async def test_a_failed_load_is_kept_as_the_reason() -> None:
    def load() -> FakeRuntime:
        raise ValueError("manifest version 9 is unknown")

    plane = _plane()
    with pytest.raises(ValueError):
        await plane.load(load)
    assert plane.state is ModelState.FAILED
    assert "failed to load: ValueError: manifest version 9 is unknown" in plane.not_ready_reason()
    await plane.close()


async def test_the_heap_is_trimmed_once_the_server_is_idle(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="fpgaserve.server.dataplane")
    plane = _plane(idle_trim_s=0.05)
    await plane.load(FakeRuntime())  # its warm-up batch is the batch before the idle spell
    try:
        await eventually(lambda: "heap trimmed" in caplog.text, what="the idle trim")
    finally:
        await plane.close()
