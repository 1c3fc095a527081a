"""ResNet-50 end to end through the compiler: every layer maps, and the program agrees with Keras."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from fpgaserve.compiler.compile import compile_keras
from fpgaserve.npu.device import DeviceMemoryError, EmulatedDevice, get_device_model
from fpgaserve.npu.executor import Executor
from tests.compiler.helpers import randomize_batchnorm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def resnet50(keras: Any) -> Any:
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(
        weights=None, include_top=False, pooling="avg", input_shape=(224, 224, 3)
    )
    randomize_batchnorm(model)
    return model


def test_resnet50_compiles_in_seconds_and_matches_keras(resnet50: Any) -> None:
    start = time.perf_counter()
    program = compile_keras(resnet50)
    compile_seconds = time.perf_counter() - start
    assert compile_seconds < 60  # "seconds, not minutes"; typically ~1 s here
    assert program.output_shape == (2048,)
    assert {op.kind for op in program.ops} == {"conv2d", "add", "max_pool", "global_avg_pool"}
    x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
    with Executor(program) as ex:
        got = ex.run(x)
    ref = resnet50(x, training=False).numpy()
    cos = (got.outputs * ref).sum(axis=1) / np.linalg.norm(got.outputs, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.999
    assert 0 < got.device_seconds < got.wall_seconds


def test_resnet50_does_not_fit_a_small_board(resnet50: Any) -> None:
    program = compile_keras(resnet50)
    with pytest.raises(DeviceMemoryError, match="MiB of weight memory"):
        Executor(program, device=EmulatedDevice(get_device_model("pbs-a10")))
