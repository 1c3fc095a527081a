"""DataPlane: loading and closing the model, readiness, validation off the loop, input helpers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from fpgaserve.inference.dataplane import (
    DataPlane,
    ModelState,
    check_shape,
    decode_base64,
    floats_json,
    to_float_input,
    top_labels,
)
from fpgaserve.inference.errors import InvalidRequest, ModelNotFound, ModelNotReady
from fpgaserve.inference.metrics import ServerMetrics
from fpgaserve.inference.settings import ServerSettings
from fpgaserve.inference.testing import FakeRuntime
from fpgaserve.runtime.protocol import InvalidInput, TensorSpec


def _plane(**settings: Any) -> DataPlane:
    return DataPlane(settings=ServerSettings(**settings), metrics=ServerMetrics())


async def test_a_loaded_runtime_is_warmed_up_served_and_closed(png: bytes) -> None:
    runtime = FakeRuntime()
    plane = _plane()
    await plane.load(runtime)
    assert plane.ready and runtime.batch_sizes == [8]  # the warm-up: one full batch
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
    assert plane.state is ModelState.DRAINING
    with pytest.raises(ModelNotReady, match="shutting down"):
        await plane.infer([png])
    await plane.close()
    assert runtime.closed


async def test_validation_runs_in_a_thread_and_names_the_input(png: bytes) -> None:
    seen: list[str] = []

    class Watched(FakeRuntime):
        def validate(self, item: Any, *, index: int) -> None:
            seen.append(threading.current_thread().name)
            super().validate(item, index=index)

    plane = _plane()
    await plane.load(Watched())
    with pytest.raises(InvalidInput) as bad:
        await plane.infer([png, b"junk"])
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

    def load() -> FakeRuntime:
        release.wait(10)
        return runtime

    plane = _plane()
    loading = asyncio.ensure_future(plane.load(load))
    await asyncio.sleep(0.05)
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


def test_decode_base64_takes_standard_urlsafe_and_unpadded() -> None:
    data = bytes(range(250, 256)) * 3
    import base64

    for text in (base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode().rstrip("=")):
        assert decode_base64(text, index=0) == data
    with pytest.raises(InvalidInput, match="not valid base64") as bad:
        decode_base64("a$b", index=4)
    assert bad.value.index == 4


def test_float_inputs_and_shapes() -> None:
    spec = TensorSpec(name="x", dtype="float32", shape=(2, None))
    assert to_float_input([[1, 2, 3], [4, 5, 6]], spec=spec, index=0).shape == (2, 3)
    for bad in ([1, 2], [["a", "b"]], [[1, 2], [3]], {"x": 1}, [[float("nan")], [1]], [[10**400], [1]]):
        with pytest.raises(InvalidInput):
            to_float_input(bad, spec=spec, index=0)
    check_shape((2, 7), spec, index=0)
    with pytest.raises(InvalidInput, match=r"takes shape \(2, any\) per input, got \(3, 7\)"):
        check_shape((3, 7), spec, index=0)


def test_top_labels() -> None:
    row = np.array([0.1, 0.5, 0.2, 0.15, 0.05, 0.0], np.float32)
    top = top_labels(row, [f"l{i}" for i in range(6)])
    assert top is not None and [t["label"] for t in top] == ["l1", "l2", "l3", "l0", "l4"]
    assert top_labels(row, None) is None
    assert top_labels(row, ["too", "few"]) is None


def test_floats_json_round_trips_float32_and_nulls_non_finite() -> None:
    import json

    values = np.random.default_rng(0).standard_normal((3, 50)).astype(np.float32) * 1e-6
    assert np.array_equal(np.asarray(json.loads(floats_json(values)), np.float32), values)
    assert json.loads(floats_json(np.array([1, np.nan, np.inf], np.float32))) == [1.0, None, None]
    assert floats_json(np.array([1.0, 1e-5], np.float32)) == "[1,9.99999975e-06]"
