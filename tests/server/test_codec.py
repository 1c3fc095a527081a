"""The faces' codec: base64, JSON floats, float inputs and shapes, top labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpgaserve.runtime.protocol import InvalidInput, TensorSpec
from fpgaserve.server.codec import check_shape, decode_base64, floats_json, to_float_input, top_labels


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

    values = np.random.default_rng(0).standard_normal((3, 50)).astype(np.float32) * 1e-6
    assert np.array_equal(np.asarray(json.loads(floats_json(values)), np.float32), values)
    assert json.loads(floats_json(np.array([1, np.nan, np.inf], np.float32))) == [1.0, None, None]
    # Shortest float32 forms: 1e-5 is not written as 9.99999975e-06 (its float64 value).
    assert floats_json(np.array([1.0, 1e-5], np.float32)) == "[1.0,0.00001]"
    assert json.loads(floats_json(np.array([[1, 2], [3, 4]], np.float32).T)) == [[1, 3], [2, 4]]
    assert floats_json(np.float32(np.nan) * np.ones((), np.float32)) == "null"
