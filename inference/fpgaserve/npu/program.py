"""Device programs: the compiled, self-contained artifact an emulated FPGA runs.

Role: the data model and the file format shared by the compiler (which writes programs, with
TensorFlow) and the executor (which runs them, with numpy alone).

A program is a list of ops over named tensors in NHWC layout. Matrix-unit ops (``conv2d``,
``depthwise_conv2d``, ``dense``) carry BFP-packed weights and a float32 bias (BatchNorm already
folded in); the others run on the vector units. The file is a zip of ``program.json`` (format
version, BFP format, ops, shapes) and ``.npy`` members, readable with ``allow_pickle=False``.

Mixed precision: a matrix op may carry its own BFP format in ``attrs["format"]`` (a ``BfpFormat`` as a
dict); its weights are packed in it and its input activations are quantized in it. Ops without one use
the program's ``fmt``. A program with any per-op format is written as file version 2 (a reader of
version 1 would decode its weights in the wrong format); uniform programs stay version 1.

Weights and activations in different formats: a matrix op may also carry ``attrs["activationFormat"]``,
the format its input activations are quantized in (default: the op's weight format), e.g. 12-bit
weights against 8-bit activations. Such a program is written as file version 3: a version-2 reader
would ignore the attribute and quantize the activations in the weight format, silently computing
something else, so it must refuse the file by version instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fpgaserve.npu.bfp import BfpFormat, BfpTensor, decode
from fpgaserve.npu.formats import Precision

__all__ = [
    "ACTIVATION_FORMAT_VERSION",
    "MATRIX_OPS",
    "MIXED_FORMAT_VERSION",
    "OP_KINDS",
    "PROGRAM_FORMAT_VERSION",
    "Op",
    "Program",
    "ProgramFormatError",
    "load_program",
    "op_activation_format",
    "op_format",
    "op_precision",
    "reduction_axis",
    "save_program",
]

PROGRAM_FORMAT_VERSION = 1  # what a program with one format everywhere is written as
MIXED_FORMAT_VERSION = 2  # a program whose matrix ops carry their own formats
ACTIVATION_FORMAT_VERSION = 3  # ... and some quantize their activations in another format than weights
READABLE_VERSIONS = (PROGRAM_FORMAT_VERSION, MIXED_FORMAT_VERSION, ACTIVATION_FORMAT_VERSION)
FORMAT_ATTRS = ("format", "activationFormat")
MATRIX_OPS = frozenset({"conv2d", "depthwise_conv2d", "dense"})
OP_KINDS = MATRIX_OPS | frozenset(
    {"add", "activation", "scale_shift", "max_pool", "avg_pool", "global_avg_pool", "pad", "reshape"}
)
ACTIVATIONS = frozenset({"linear", "relu", "relu6"})


class ProgramFormatError(ValueError):
    """A program file is malformed, from an unknown format version, or inconsistent."""


@dataclass(frozen=True)
class Op:
    """One op. ``attrs`` holds plain JSON values (strides, pads, activation, target shape...)."""

    kind: str
    name: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in OP_KINDS:
            raise ProgramFormatError(f"op {self.name!r} has unknown kind {self.kind!r}")
        act = self.attrs.get("activation", "linear")
        if act not in ACTIVATIONS:
            raise ProgramFormatError(f"op {self.name!r} has unknown activation {act!r}")
        for attr in FORMAT_ATTRS:
            if attr not in self.attrs:
                continue
            if self.kind not in MATRIX_OPS:
                raise ProgramFormatError(
                    f"op {self.name!r} ({self.kind}) runs on the vector units: no {attr}"
                )
            try:
                BfpFormat(**self.attrs[attr])
            except (TypeError, ValueError) as exc:
                raise ProgramFormatError(f"op {self.name!r} has an invalid {attr} ({exc})") from None


def op_format(op: Op, default: BfpFormat) -> BfpFormat:
    """The BFP format of a matrix op's weights: its own when it carries one, else the program's
    ``default``. Its activations use it too unless the op has an ``activationFormat``."""
    spec = op.attrs.get("format")
    return BfpFormat(**spec) if spec is not None else default


def op_activation_format(op: Op, default: BfpFormat) -> BfpFormat:
    """The BFP format a matrix op quantizes its input activations in: its ``activationFormat`` when it
    carries one, else its weight format (``op_format``)."""
    spec = op.attrs.get("activationFormat")
    return BfpFormat(**spec) if spec is not None else op_format(op, default)


def op_precision(op: Op, default: BfpFormat) -> Precision:
    """Both formats of a matrix op: weights and activations."""
    return Precision(op_format(op, default), op_activation_format(op, default))


@dataclass
class Program:
    """A compiled featurizer: ops, packed weights, and what it expects and produces."""

    name: str
    fmt: BfpFormat
    input_name: str
    input_shape: tuple[int, ...]  # per example, e.g. (224, 224, 3)
    output_name: str
    output_shape: tuple[int, ...]
    ops: list[Op]
    # Matrix-unit weights, packed along the reduction axis (moved last), keyed by op name.
    weights: dict[str, BfpTensor]
    # The original (unpacked) weight shape per op, e.g. (kh, kw, cin, cout) for conv2d.
    weight_shapes: dict[str, tuple[int, ...]]
    biases: dict[str, npt.NDArray[np.float32]]
    # Per-op float32 constants of vector-unit ops (scale_shift's scale and shift).
    constants: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = PROGRAM_FORMAT_VERSION

    @property
    def weight_bytes(self) -> int:
        """Device weight memory the program occupies: packed BFP weights plus fp32 vectors."""
        packed = sum(self.op_weight_bytes(name) for name in self.weights)
        vectors = sum(b.nbytes for b in self.biases.values()) + sum(c.nbytes for c in self.constants.values())
        return packed + vectors

    def op_weight_bytes(self, op_name: str) -> int:
        """Packed bytes of one matrix op's weights, in that op's format."""
        t = self.weights[op_name]
        return t.fmt.storage_bytes(values=t.mantissas.size, blocks=t.exponents.size)

    def format_of(self, op_name: str) -> BfpFormat:
        """The BFP format of a matrix op's weights (its own, or the program's)."""
        return op_format(self.op(op_name), self.fmt)

    def activation_format_of(self, op_name: str) -> BfpFormat:
        """The BFP format a matrix op quantizes its input activations in."""
        return op_activation_format(self.op(op_name), self.fmt)

    def precision_of(self, op_name: str) -> Precision:
        return op_precision(self.op(op_name), self.fmt)

    @property
    def file_version(self) -> int:
        """The file format version ``save_program`` writes this program as: its ``version``, except that
        a mixed program needs at least version 2 (a version-1 reader would decode its weights wrongly)
        and one with activation formats apart from weight formats version 3 (a version-2 reader would
        quantize its activations in the weight formats)."""
        if self.has_activation_formats:
            return max(self.version, ACTIVATION_FORMAT_VERSION)
        if self.is_mixed and self.version < MIXED_FORMAT_VERSION:
            return MIXED_FORMAT_VERSION
        return self.version

    @property
    def is_mixed(self) -> bool:
        """Whether any matrix op runs in a format other than the program's (weights or activations)."""
        return any(
            op_precision(op, self.fmt) != Precision.of(self.fmt) for op in self.ops if op.kind in MATRIX_OPS
        )

    @property
    def has_activation_formats(self) -> bool:
        """Whether any matrix op quantizes its activations in another format than its weights."""
        return any(not op_precision(op, self.fmt).uniform for op in self.ops if op.kind in MATRIX_OPS)

    def layer_formats(self) -> dict[str, str]:
        """Precision name per matrix op, in program order: a format's name, or ``WEIGHTS/ACTIVATIONS``."""
        return {op.name: op_precision(op, self.fmt).name for op in self.ops if op.kind in MATRIX_OPS}

    @property
    def parameter_count(self) -> int:
        return sum(int(np.prod(s)) for s in self.weight_shapes.values()) + sum(
            b.size for b in self.biases.values()
        )

    def dequantized_weight(self, op_name: str) -> npt.NDArray[np.float32]:
        """The float32 weight of a matrix op in its original layout (values exactly as on device)."""
        shape = self.weight_shapes[op_name]
        values = decode(self.weights[op_name])  # (..., reduction) with the reduction axis last
        axis = reduction_axis(self.op(op_name).kind)
        moved = [*shape[:axis], *shape[axis + 1 :], shape[axis]] if axis >= 0 else list(shape)
        return np.moveaxis(values.reshape(moved), -1, axis)

    def op(self, name: str) -> Op:
        for op in self.ops:
            if op.name == name:
                return op
        raise KeyError(name)

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.kind] = counts.get(op.kind, 0) + 1
        summary: dict[str, Any] = {
            "name": self.name,
            "format": "mixed" if self.is_mixed else self.fmt.name,
            "inputShape": list(self.input_shape),
            "outputShape": list(self.output_shape),
            "ops": counts,
            "parameters": self.parameter_count,
            "weightBytes": self.weight_bytes,
        }
        if self.is_mixed:
            layer_formats = self.layer_formats()
            summary["layerFormats"] = layer_formats
            summary["formatCounts"] = {
                f: list(layer_formats.values()).count(f) for f in sorted(set(layer_formats.values()))
            }
        return summary


def reduction_axis(kind: str) -> int:
    """Axis of the unpacked weight along which BFP blocks run (the dot-product axis)."""
    # conv2d (kh, kw, cin, cout): cin. depthwise (kh*kw, c): the taps of each channel, which are its
    # whole dot product. dense (in, out): in.
    return {"conv2d": 2, "depthwise_conv2d": 0, "dense": 0}[kind]


def _npy_bytes(arr: npt.NDArray[Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def save_program(program: Program, path: str | Path) -> str:
    """Write ``program`` to ``path``; returns the sha256 of the file."""
    header = {
        "version": program.file_version,
        "name": program.name,
        "format": asdict(program.fmt),
        "input": {"name": program.input_name, "shape": list(program.input_shape)},
        "output": {"name": program.output_name, "shape": list(program.output_shape)},
        "ops": [
            {
                "kind": op.kind,
                "name": op.name,
                "inputs": list(op.inputs),
                "output": op.output,
                "attrs": op.attrs,
            }
            for op in program.ops
        ],
        "weights": {
            k: {"shape": list(program.weight_shapes[k]), "length": t.length}
            for k, t in program.weights.items()
        },
        "metadata": program.metadata,
    }
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("program.json", json.dumps(header, indent=1, sort_keys=True))
        for k, t in program.weights.items():
            zf.writestr(f"weights/{k}/mantissas.npy", _npy_bytes(t.mantissas))
            zf.writestr(f"weights/{k}/exponents.npy", _npy_bytes(t.exponents))
        for k, b in program.biases.items():
            zf.writestr(f"biases/{k}.npy", _npy_bytes(b))
        for k, c in program.constants.items():
            zf.writestr(f"constants/{k}.npy", _npy_bytes(c))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_npy(zf: zipfile.ZipFile, member: str) -> npt.NDArray[Any]:
    try:
        with zf.open(member) as f:
            arr: npt.NDArray[Any] = np.load(io.BytesIO(f.read()), allow_pickle=False)
            return arr
    except KeyError:
        raise ProgramFormatError(f"program file lacks member {member!r}") from None


def load_program(path: str | Path) -> Program:
    """Read a program file; refuses unknown versions and inconsistent or corrupt contents."""
    try:
        return _load_program(path)
    except ProgramFormatError:
        raise
    # A damaged member fails its CRC (BadZipFile); a malformed header or .npy fails while decoding.
    except (zipfile.BadZipFile, KeyError, IndexError, TypeError, ValueError, AttributeError, EOFError) as exc:
        raise ProgramFormatError(f"{path}: corrupt device program ({type(exc).__name__}: {exc})") from None


def _load_program(path: str | Path) -> Program:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ProgramFormatError(f"{path}: not a device program ({exc})") from None
    with zf:
        try:
            header = json.loads(zf.read("program.json"))
        except (KeyError, json.JSONDecodeError) as exc:
            raise ProgramFormatError(f"{path}: missing or invalid program.json ({exc})") from None
        version = header.get("version")
        if version not in READABLE_VERSIONS:
            raise ProgramFormatError(
                f"{path}: program format version {version!r} is not supported (this fpgaserve reads "
                f"versions {', '.join(map(str, READABLE_VERSIONS))}); recompile the model with this version"
            )
        fmt = BfpFormat(**header["format"])
        ops = [
            Op(
                kind=o["kind"],
                name=o["name"],
                inputs=tuple(o["inputs"]),
                output=o["output"],
                attrs=o["attrs"],
            )
            for o in header["ops"]
        ]
        formats = {op.name: op_format(op, fmt) for op in ops}
        weights: dict[str, BfpTensor] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for k, meta in header["weights"].items():
            mant = _load_npy(zf, f"weights/{k}/mantissas.npy").astype(np.int16, copy=False)
            exps = _load_npy(zf, f"weights/{k}/exponents.npy").astype(np.int8, copy=False)
            wfmt = formats.get(k, fmt)
            if mant.shape[-1] != exps.shape[-1] * wfmt.block_size:
                raise ProgramFormatError(f"{path}: weight {k!r} mantissas and exponents disagree")
            weights[k] = BfpTensor(mantissas=mant, exponents=exps, length=int(meta["length"]), fmt=wfmt)
            shapes[k] = tuple(meta["shape"])
        biases = {
            n.removeprefix("biases/").removesuffix(".npy"): _load_npy(zf, n).astype(np.float32)
            for n in zf.namelist()
            if n.startswith("biases/")
        }
        constants = {
            n.removeprefix("constants/").removesuffix(".npy"): _load_npy(zf, n).astype(np.float32)
            for n in zf.namelist()
            if n.startswith("constants/")
        }
    return Program(
        name=header["name"],
        fmt=fmt,
        input_name=header["input"]["name"],
        input_shape=tuple(header["input"]["shape"]),
        output_name=header["output"]["name"],
        output_shape=tuple(header["output"]["shape"]),
        ops=ops,
        weights=weights,
        weight_shapes=shapes,
        biases=biases,
        constants=constants,
        metadata=header.get("metadata", {}),
        version=version,
    )
