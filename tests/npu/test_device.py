"""Emulated devices (``fpgaserve.npu.device``): hardware presets, cycle model, weight-memory accounting."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from fpgaserve.npu.device import (
    DEFAULT_DEVICE_MODEL,
    DEVICE_MODELS,
    DeviceMemoryError,
    DeviceModel,
    EmulatedDevice,
    get_device_model,
)

MiB = 1 << 20
SMALL = DeviceModel(
    "small", weight_memory_bytes=1000, matrix_units=2, native_dim=4, vector_lanes=8, clock_mhz=100.0
)


@pytest.mark.parametrize(
    ("name", "memory", "units", "dim", "lanes", "mhz"),
    [
        ("pbs-s10", 64 * MiB, 6, 128, 1024, 300.0),
        ("pbs-a10", 16 * MiB, 2, 128, 256, 250.0),
        ("pbs-tiny", 1 * MiB, 1, 32, 64, 200.0),
    ],
)
def test_presets(name: str, memory: int, units: int, dim: int, lanes: int, mhz: float) -> None:
    model = get_device_model(name)
    assert model is DEVICE_MODELS[name]
    assert (model.weight_memory_bytes, model.matrix_units, model.native_dim) == (memory, units, dim)
    assert (model.vector_lanes, model.clock_mhz) == (lanes, mhz)
    assert (model.op_overhead_cycles, model.host_link_gbps) == (64, 64.0)


def test_default_model_and_unknown_names() -> None:
    assert DEFAULT_DEVICE_MODEL is DEVICE_MODELS["pbs-s10"]
    with pytest.raises(ValueError, match="pbs-tiny"):
        get_device_model("pbs-xl")


@pytest.mark.parametrize("field", ["weight_memory_bytes", "matrix_units", "native_dim", "vector_lanes"])
def test_model_refuses_non_positive_sizes(field: str) -> None:
    args = {"weight_memory_bytes": 1, "matrix_units": 1, "native_dim": 1, "vector_lanes": 1, "clock_mhz": 1.0}
    args[field] = 0
    with pytest.raises(ValueError, match=field):
        DeviceModel("bad", **args)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clock_mhz"):
        DeviceModel("bad", weight_memory_bytes=1, matrix_units=1, native_dim=1, vector_lanes=1, clock_mhz=0.0)


def test_matrix_cycles_count_native_tiles_per_activation_vector() -> None:
    # 10 rows; K = 9 -> 3 tiles of 4, N = 5 -> 2 tiles: 10 * 6 = 60 tile-vector products over 2
    # units = 30 cycles, plus 64 of pipeline fill.
    assert SMALL.matrix_cycles(rows=10, reduction=9, outputs=5) == 94
    # An odd total rounds up: 3 * 1 * 1 / 2 units -> 2 cycles.
    assert SMALL.matrix_cycles(rows=3, reduction=4, outputs=4) == 66
    # pbs-s10: 196 rows * ceil(576/128)=5 * ceil(64/128)=1 tiles / 6 units = 163.33 -> 164, + 64.
    assert DEVICE_MODELS["pbs-s10"].matrix_cycles(rows=196, reduction=576, outputs=64) == 228


@pytest.mark.parametrize(("bits", "passes"), [(3, 1), (8, 1), (9, 4), (12, 4), (16, 4), (17, 9)])
def test_wider_elements_take_more_passes(bits: int, passes: int) -> None:
    # 8-bit lanes: a 12-bit element splits into two limbs per operand, 2 x 2 partial products.
    assert SMALL.matrix_passes(bits) == passes
    assert SMALL.matrix_cycles(rows=10, reduction=9, outputs=5, element_bits=bits) == 30 * passes + 64


def test_vector_cycles_and_time_conversions() -> None:
    assert SMALL.vector_cycles(elements=17) == 3 + 64  # ceil(17 / 8 lanes) + overhead
    assert SMALL.vector_cycles(elements=0) == 64
    assert SMALL.seconds(100_000_000) == pytest.approx(1.0)  # 100 MHz
    assert DEVICE_MODELS["pbs-s10"].seconds(300) == pytest.approx(1e-6)
    assert SMALL.transfer_seconds(nbytes=8_000_000_000) == pytest.approx(1.0)  # 64 Gbit/s = 8 GB/s


def test_describe_lists_the_hardware() -> None:
    assert SMALL.describe() == {
        "name": "small",
        "weightMemoryBytes": 1000,
        "matrixUnits": 2,
        "nativeDim": 4,
        "vectorLanes": 8,
        "clockMHz": 100.0,
        "nativeElementBits": 8,
    }


def test_devices_have_distinct_ids_and_the_default_model() -> None:
    a, b = EmulatedDevice(), EmulatedDevice()
    assert a.device_id != b.device_id
    assert a.device_id.startswith("fpga-")
    assert a.model is DEFAULT_DEVICE_MODEL
    assert EmulatedDevice(model=SMALL, device_id="fpga-0").device_id == "fpga-0"


def test_device_holds_several_programs_while_memory_allows() -> None:
    device = EmulatedDevice(model=SMALL)
    device.load(key="a", nbytes=400)
    device.load(key="b", nbytes=600)  # exactly fills the memory
    assert device.used_bytes == 1000 and device.free_bytes == 0
    assert device.resident_programs() == {"a": 400, "b": 600}
    device.unload(key="a")
    device.load(key="c", nbytes=300)
    assert device.resident_programs() == {"b": 600, "c": 300}
    assert device.free_bytes == 100


def test_program_that_does_not_fit_is_refused_and_nothing_is_reserved() -> None:
    device = EmulatedDevice(model=SMALL, device_id="fpga-7")
    device.load(key="a", nbytes=700)
    with pytest.raises(DeviceMemoryError) as err:
        device.load(key="big", nbytes=301)
    message = str(err.value)
    assert "'big'" in message and "fpga-7" in message and "small" in message
    assert "narrower format" in message  # says what to do next
    assert device.resident_programs() == {"a": 700}
    with pytest.raises(DeviceMemoryError):
        EmulatedDevice(model=SMALL).load(key="huge", nbytes=1001)


def test_loading_the_same_key_twice_reserves_once() -> None:
    device = EmulatedDevice(model=SMALL)
    device.load(key="a", nbytes=600)
    device.load(key="a", nbytes=600)
    assert device.used_bytes == 600


def test_unloading_an_unknown_key_is_harmless() -> None:
    device = EmulatedDevice(model=SMALL)
    device.load(key="a", nbytes=10)
    device.unload(key="nope")
    assert device.resident_programs() == {"a": 10}


def test_resident_programs_is_a_copy() -> None:
    device = EmulatedDevice(model=SMALL)
    device.load(key="a", nbytes=10)
    device.resident_programs()["b"] = 990
    assert device.free_bytes == 990


def test_concurrent_loads_never_overcommit() -> None:
    device = EmulatedDevice(model=SMALL)
    start = threading.Barrier(8)

    def load(i: int) -> bool:
        start.wait()
        try:
            device.load(key=f"p{i}", nbytes=250)
        except DeviceMemoryError:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        loaded = list(pool.map(load, range(8)))
    assert sum(loaded) == 4
    assert device.used_bytes == 1000
