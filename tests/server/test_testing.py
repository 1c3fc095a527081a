"""FakeRuntime: a true ModelRuntime, deterministic, with the cost it is given."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fpgaserve.runtime.protocol import InvalidInput, ModelRuntime
from fpgaserve.server.testing import FakeRuntime, encode_jpeg, encode_png, sample_image


def test_it_implements_the_protocol_deterministically(png: bytes, jpeg: bytes) -> None:
    runtime = FakeRuntime()
    assert isinstance(runtime, ModelRuntime)
    first, again = runtime.predict([png, jpeg]), FakeRuntime().predict([png, jpeg])
    np.testing.assert_array_equal(first.outputs, again.outputs)
    assert first.outputs.shape == (2, 10) and first.outputs.dtype == np.float32
    np.testing.assert_allclose(first.outputs.sum(axis=1), 1, rtol=1e-5)
    assert first.device_seconds == pytest.approx(0.0004)
    assert not np.allclose(first.outputs[0], first.outputs[1])


def test_validate_is_cheap_and_predict_finds_what_it_misses() -> None:
    runtime = FakeRuntime()
    with pytest.raises(InvalidInput) as bad:
        runtime.validate(b"GIF89a not really", index=3)
    assert bad.value.index == 3
    whole = encode_jpeg(sample_image(seed=2))
    truncated = whole[: len(whole) * 2 // 3]  # headers intact, scan data cut
    runtime.validate(truncated, index=0)  # the header is fine...
    with pytest.raises(InvalidInput, match="does not decode") as bad:
        runtime.predict([encode_png(sample_image()), truncated])
    assert bad.value.index == 1  # ...the pixels are not


@pytest.mark.parametrize("cost", ["sleep", "spin"])
def test_the_modeled_cost_is_spent(png: bytes, cost: str) -> None:
    runtime = FakeRuntime(batch_cost_s=0.02, item_cost_s=0.01, cost=cost)  # type: ignore[arg-type]
    start = time.perf_counter()
    runtime.predict([png, png])
    assert time.perf_counter() - start >= (0.03 if cost == "sleep" else 0.01)
