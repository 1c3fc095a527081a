"""Device programs (``fpgaserve.npu.program``): the data model, the file format, and its refusals."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fpgaserve.npu.bfp import FORMATS, quantize
from fpgaserve.npu.program import (
    PROGRAM_FORMAT_VERSION,
    Op,
    Program,
    ProgramFormatError,
    load_program,
    reduction_axis,
    save_program,
)
from tests.npu.helpers import make_program

FMT = FORMATS["msfp12"]
RNG = np.random.default_rng(0)
CONV_W = RNG.standard_normal((3, 3, 5, 4)).astype(np.float32)
DW_W = RNG.standard_normal((3, 3, 4)).astype(np.float32)
DENSE_W = RNG.standard_normal((4, 3)).astype(np.float32)


def sample_program() -> Program:
    ops = [
        Op("conv2d", "conv", ("x",), "c", {"strides": [1, 1], "pads": [1, 1, 1, 1], "out_shape": [6, 6, 4]}),
        Op(
            "depthwise_conv2d",
            "dw",
            ("c",),
            "d",
            {"kernel": [3, 3], "pads": [1, 1, 1, 1], "out_shape": [6, 6, 4]},
        ),
        Op("scale_shift", "bn", ("d",), "s", {"activation": "relu6", "out_shape": [6, 6, 4]}),
        Op("global_avg_pool", "gap", ("s",), "g", {"in_shape": [6, 6, 4], "out_shape": [4]}),
        Op("dense", "fc", ("g",), "y", {"out_shape": [3]}),
    ]
    return make_program(
        fmt=FMT,
        input_shape=(6, 6, 5),
        output_shape=(3,),
        ops=ops,
        weights={"conv": ("conv2d", CONV_W), "dw": ("depthwise_conv2d", DW_W), "fc": ("dense", DENSE_W)},
        biases={"conv": np.arange(4, dtype=np.float32), "fc": np.ones(3, np.float32)},
        constants={"bn.scale": np.full(4, 2.0, np.float32), "bn.shift": np.zeros(4, np.float32)},
    )


def assert_same_program(a: Program, b: Program) -> None:
    assert (a.name, a.fmt, a.version) == (b.name, b.fmt, b.version)
    assert (a.input_name, tuple(a.input_shape), a.output_name, tuple(a.output_shape)) == (
        b.input_name,
        tuple(b.input_shape),
        b.output_name,
        tuple(b.output_shape),
    )
    assert a.ops == b.ops
    assert a.weights.keys() == b.weights.keys()
    for k, t in a.weights.items():
        u = b.weights[k]
        assert t.mantissas.dtype == u.mantissas.dtype and np.array_equal(t.mantissas, u.mantissas)
        assert t.exponents.dtype == u.exponents.dtype and np.array_equal(t.exponents, u.exponents)
        assert (t.length, t.fmt) == (u.length, u.fmt)
    assert a.weight_shapes == b.weight_shapes
    for mine, theirs in ((a.biases, b.biases), (a.constants, b.constants)):
        assert mine.keys() == theirs.keys()
        for k, v in mine.items():
            assert theirs[k].dtype == np.float32 and np.array_equal(v, theirs[k])
    assert a.metadata == b.metadata


def test_save_load_round_trip_preserves_everything(tmp_path: Path) -> None:
    program = sample_program()
    path = tmp_path / "p.fpga"
    digest = save_program(program, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_program(path)
    assert_same_program(loaded, program)
    assert loaded.weight_bytes == program.weight_bytes
    assert loaded.summary() == program.summary()


def test_file_needs_no_pickle(tmp_path: Path) -> None:
    save_program(sample_program(), tmp_path / "p.fpga")
    with zipfile.ZipFile(tmp_path / "p.fpga") as zf:
        for name in zf.namelist():
            if name.endswith(".npy"):
                np.load(io.BytesIO(zf.read(name)), allow_pickle=False)
        header = json.loads(zf.read("program.json"))
    assert header["version"] == PROGRAM_FORMAT_VERSION
    assert header["format"]["name"] == "msfp12"


def test_dequantized_weights_are_the_bfp_values_along_the_reduction_axis() -> None:
    program = sample_program()
    assert reduction_axis("conv2d") == 2 and reduction_axis("dense") == 0
    conv = program.dequantized_weight("conv")
    assert conv.shape == (3, 3, 5, 4)
    assert np.array_equal(conv, quantize(CONV_W, FMT, axis=2))  # blocks over input channels
    assert np.array_equal(program.dequantized_weight("fc"), quantize(DENSE_W, FMT, axis=0))
    # depthwise is stored as (taps, channels) with blocks over the taps: each channel's dot product.
    assert reduction_axis("depthwise_conv2d") == 0
    assert np.array_equal(program.dequantized_weight("dw"), quantize(DW_W.reshape(9, 4), FMT, axis=0))
    assert not np.array_equal(conv, CONV_W)  # msfp12 really rounds


def test_weight_bytes_and_parameter_count() -> None:
    program = sample_program()
    # msfp12 packs 4 bits per value + 8 per block of 16. conv: 36 blocks (one per kh, kw, cout) of
    # 5 padded to 16 -> (576 * 4 + 36 * 8) / 8 = 324 bytes. dw (9 taps x 4 channels): along the taps,
    # 4 blocks -> (64 * 4 + 32) / 8 = 36 bytes. fc: 3 blocks -> (48 * 4 + 24) / 8 = 27 bytes.
    # Biases and scale/shift are float32: (4 + 3 + 4 + 4) * 4 = 60 bytes.
    assert program.weight_bytes == 324 + 36 + 27 + 60
    assert program.parameter_count == 180 + 36 + 12 + 4 + 3
    summary = program.summary()
    assert summary["ops"] == {
        "conv2d": 1,
        "depthwise_conv2d": 1,
        "scale_shift": 1,
        "global_avg_pool": 1,
        "dense": 1,
    }
    assert (summary["format"], summary["inputShape"], summary["outputShape"]) == ("msfp12", [6, 6, 5], [3])


def test_op_lookup() -> None:
    program = sample_program()
    assert program.op("dw").kind == "depthwise_conv2d"
    with pytest.raises(KeyError):
        program.op("missing")


@pytest.mark.parametrize(
    ("kind", "attrs", "match"),
    [
        ("softmax", {}, "unknown kind 'softmax'"),
        ("conv2d", {"activation": "gelu"}, "unknown activation 'gelu'"),
    ],
)
def test_ops_refuse_unknown_kinds_and_activations(kind: str, attrs: dict[str, Any], match: str) -> None:
    with pytest.raises(ProgramFormatError, match=match):
        Op(kind, "bad", ("x",), "y", attrs)


# -- refusals ------------------------------------------------------------------------------------


def rewrite(
    tmp_path: Path, *, header: Callable[[dict[str, Any]], None] | None = None, drop: str | None = None
) -> Path:
    """A saved sample program with its header edited and/or one member left out."""
    src = tmp_path / "good.fpga"
    save_program(sample_program(), src)
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    if header is not None:
        h = json.loads(members["program.json"])
        header(h)
        members["program.json"] = json.dumps(h).encode()
    out = tmp_path / "edited.fpga"
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            if name != drop:
                zf.writestr(name, data)
    return out


@pytest.mark.parametrize("version", [0, 4, "1", "2", "3", None])
def test_unknown_version_is_refused(tmp_path: Path, version: object) -> None:
    path = rewrite(tmp_path, header=lambda h: h.update(version=version))
    with pytest.raises(ProgramFormatError, match=r"version .* is not supported.*recompile"):
        load_program(path)


def test_program_object_with_another_version_is_written_as_such(tmp_path: Path) -> None:
    program = sample_program()
    program.version = PROGRAM_FORMAT_VERSION + 3  # 2 and 3 are mixed-precision programs
    save_program(program, tmp_path / "future.fpga")
    with pytest.raises(ProgramFormatError, match="version"):
        load_program(tmp_path / "future.fpga")


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h.pop("format"),
        lambda h: h["format"].update(mantissa_bits=99),
        lambda h: h.pop("ops"),
        lambda h: h["ops"][0].update(kind="bogus"),
        lambda h: h["weights"]["conv"].pop("shape"),
        lambda h: h.update(input="x"),
    ],
    ids=["no-format", "bad-format", "no-ops", "bad-op", "no-weight-shape", "bad-input"],
)
def test_malformed_header_is_refused(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    with pytest.raises(ProgramFormatError):
        load_program(rewrite(tmp_path, header=edit))


def test_missing_member_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProgramFormatError, match=r"weights/conv/mantissas\.npy"):
        load_program(rewrite(tmp_path, drop="weights/conv/mantissas.npy"))
    with pytest.raises(ProgramFormatError, match=r"program\.json"):
        load_program(rewrite(tmp_path, drop="program.json"))


def test_inconsistent_weight_blocks_are_refused(tmp_path: Path) -> None:
    path = rewrite(tmp_path, header=lambda h: h["format"].update(block_size=8))
    with pytest.raises(ProgramFormatError, match="disagree"):
        load_program(path)


def test_not_a_program_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.fpga").write_bytes(b"not a zip file")
    with pytest.raises(ProgramFormatError, match="not a device program"):
        load_program(tmp_path / "x.fpga")
    with pytest.raises(ProgramFormatError):
        load_program(tmp_path / "missing.fpga")


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    save_program(sample_program(), tmp_path / "p.fpga")
    data = (tmp_path / "p.fpga").read_bytes()
    (tmp_path / "p.fpga").write_bytes(data[: len(data) // 2])
    with pytest.raises(ProgramFormatError):
        load_program(tmp_path / "p.fpga")


@pytest.mark.parametrize("member", ["program.json", "weights/conv/mantissas.npy", "biases/fc.npy"])
def test_corrupted_member_is_refused(tmp_path: Path, member: str) -> None:
    path = tmp_path / "p.fpga"
    save_program(sample_program(), path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    data = bytearray(path.read_bytes())
    # The member's data follows its 30-byte local header, file name and extra field.
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))
    with pytest.raises(ProgramFormatError, match="corrupt"):
        load_program(path)
