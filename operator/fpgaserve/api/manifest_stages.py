"""The stages of a service package's manifest: what each pipeline stage is and needs to run.

Role: the pydantic models of one ``pipeline`` entry of ``manifest.json`` (TensorFlow and Keras stages
with their optional ``host`` lowerings, device-program stages) and the tensor and format specs they
share. ``fpgaserve.api.manifest`` puts them together into the whole manifest and is where readers
import them from; this module only keeps that file to one role. Dependency-free apart from pydantic.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "MEMBER_PATH",
    "SHA256",
    "STAGE_NAME",
    "BfpFormatSpec",
    "FpgaStageSpec",
    "HostDenseSpec",
    "HostImagePreprocessSpec",
    "HostLoweringSpec",
    "KerasStageSpec",
    "ManifestModel",
    "MemberPath",
    "Sha256",
    "StageSpec",
    "TensorSpecModel",
    "TensorflowStageSpec",
    "is_member_path",
    "specs_compatible",
]

SHA256 = r"^[a-f0-9]{64}$"
# Relative POSIX paths whose components never start with a dot: no "..", no ".", no hidden files,
# no absolute paths, no backslashes. The package reader checks the zip's own names separately.
_COMPONENT = r"[A-Za-z0-9_@+=-][A-Za-z0-9._@+=-]*"
MEMBER_PATH = rf"^{_COMPONENT}(/{_COMPONENT})*$"
STAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_MEMBER_PATH_RE = re.compile(MEMBER_PATH)


def is_member_path(path: str) -> bool:
    """Whether ``path`` is a well-formed member path (relative, no dot components, no backslashes)."""
    return len(path) <= 255 and _MEMBER_PATH_RE.fullmatch(path) is not None


MemberPath = Annotated[str, Field(pattern=MEMBER_PATH, min_length=1, max_length=255)]
Sha256 = Annotated[str, Field(pattern=SHA256)]


class ManifestModel(BaseModel):
    # Unknown fields are an error: a reader must not silently ignore what a newer writer meant.
    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # Each model's validator is built when first used, not at import: a reader validates only
        # the whole Manifest, whose build covers the nested models (about 0.01 s less CPU at start).
        defer_build=True,
    )


class TensorSpecModel(ManifestModel):
    """One stage input or output. ``shape`` excludes the batch dimension; null is any size."""

    name: str = Field(min_length=1, max_length=128, description="Signature key of the tensor.")
    dtype: Literal["string", "float32", "int64"] = Field(description='"string": encoded image bytes.')
    shape: tuple[Annotated[int, Field(ge=1)] | None, ...] = Field(
        max_length=8, description="Per-example shape, batch dimension excluded."
    )

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"


def specs_compatible(produced: TensorSpecModel, consumed: TensorSpecModel) -> bool:
    """Whether a tensor of spec ``produced`` can feed an input of spec ``consumed``.

    Same dtype and rank; each dimension equal, or unknown (None) on either side.
    """
    if produced.dtype != consumed.dtype or len(produced.shape) != len(consumed.shape):
        return False
    return all(a is None or b is None or a == b for a, b in zip(produced.shape, consumed.shape, strict=True))


class BfpFormatSpec(ManifestModel):
    """The block-floating-point format a device program was quantized to (see docs/numerics.md)."""

    name: str = Field(min_length=1, max_length=64)
    block_size: int = Field(ge=1)
    exponent_bits: int = Field(ge=2, le=8)
    mantissa_bits: int = Field(ge=1, le=15)
    rounding: Literal["nearest", "even", "zero"] = "nearest"


class _StageBase(ManifestModel):
    name: str = Field(pattern=STAGE_NAME, max_length=63, description="Unique within the pipeline.")
    path: MemberPath = Field(description="SavedModel directory or program file, inside the package.")
    input: TensorSpecModel
    output: TensorSpecModel


# -- host lowerings (issue 14): stages fpgaserve built itself, run without TensorFlow -----------------

Channel = Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6)]


class HostImagePreprocessSpec(ManifestModel):
    """``preprocess_array``: decode (3 channels, first frame), central square crop of side
    ``int(size / (size + cropPadding) * min(height, width))`` (at least 1), bicubic resize to
    ``size`` x ``size`` (Keys a=-0.5, half-pixel centres, no antialias, as ``tf.image.resize``),
    then ``(x[..., order] - mean) / std`` per channel in float32."""

    op: Literal["image-preprocess"]
    size: int = Field(ge=1, le=4096, description="Side of the square output.")
    crop_padding: int = Field(default=32, ge=0, le=4096)
    channel_order: Literal["rgb", "bgr"] = Field(default="rgb", description="bgr: channels reversed first.")
    mean: tuple[Channel, Channel, Channel] = (0.0, 0.0, 0.0)
    std: tuple[Channel, Channel, Channel] = Field(default=(1.0, 1.0, 1.0))

    @field_validator("std")
    @classmethod
    def _nonzero(cls, std: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v == 0 for v in std):
            raise ValueError("std must not be 0")
        return std


class HostDenseSpec(ManifestModel):
    """A dense layer and its activation: ``activation(x @ kernel + bias)`` in float32. ``weights`` is
    an ``.npz`` member of the stage (arrays ``kernel`` (in, out) and ``bias`` (out,), no pickles)."""

    op: Literal["dense"]
    weights: MemberPath
    activation: Literal["softmax", "linear"]


HostLoweringSpec = Annotated[HostImagePreprocessSpec | HostDenseSpec, Field(discriminator="op")]


class _CpuStageBase(_StageBase):
    signature: str = Field(default="serving_default", min_length=1, max_length=128)
    runtime: Literal["tensorflow", "host"] = Field(
        default="tensorflow",
        description="What the stage needs to run: the SavedModel in TensorFlow, or its `host` lowering "
        "(numpy and Pillow). Left out (so older readers still read the package) when tensorflow.",
    )
    host: HostLoweringSpec | None = Field(
        default=None, description="The TensorFlow-free form of the stage; required when runtime is host."
    )

    @model_validator(mode="after")
    def _host_when_runtime_host(self) -> _CpuStageBase:
        if (self.runtime == "host") != (self.host is not None):
            raise ValueError(f"stage {self.name!r}: runtime 'host' and a `host` lowering go together")
        if isinstance(self.host, HostDenseSpec) and not self.host.weights.startswith(
            self.path.rstrip("/") + "/"
        ):
            raise ValueError(
                f"stage {self.name!r}: host weights {self.host.weights!r} are not under its path"
            )
        if isinstance(self.host, HostImagePreprocessSpec) and (
            self.input.dtype != "string" or self.output.shape != (self.host.size, self.host.size, 3)
        ):
            raise ValueError(
                f"stage {self.name!r}: an image-preprocess lowering takes encoded images and returns "
                f"float32[{self.host.size}, {self.host.size}, 3]"
            )
        return self

    @model_serializer(mode="wrap")
    def _omit_tensorflow_default(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if self.runtime == "tensorflow":
            for key in ("runtime", "host"):
                data.pop(key, None)
        return data


class TensorflowStageSpec(_CpuStageBase):
    """A TensorFlow SavedModel run on the CPU through one signature (or its host lowering)."""

    kind: Literal["tensorflow"]


class KerasStageSpec(_CpuStageBase):
    """A Keras model, exported as a SavedModel, run on the CPU (or its host lowering)."""

    kind: Literal["keras"]


class FpgaStageSpec(_StageBase):
    """A compiled device program run on an (emulated) FPGA."""

    kind: Literal["fpga"]
    format: BfpFormatSpec
    weight_bytes: int = Field(ge=0, description="Device weight memory the program occupies.")
    program_sha256: Sha256 = Field(description="sha256 of the program file (the member at path).")
    program_version: int = Field(ge=1, description="Device program format version.")
    source: str = Field(default="", max_length=256, description="What it was compiled from.")
    layer_formats: dict[Annotated[str, Field(min_length=1, max_length=256)], BfpFormatSpec] = Field(
        default_factory=dict,
        max_length=4096,
        description="Mixed precision: the matrix ops whose format differs from `format`, each with its "
        "own. Empty (and left out of the JSON, so older readers still read it) for one format everywhere.",
    )
    # Issue 16, weights and activations apart (program version 3): like layer_formats, left out when
    # empty so that packages without such ops stay readable by older readers.
    layer_activation_formats: dict[Annotated[str, Field(min_length=1, max_length=256)], BfpFormatSpec] = (
        Field(
            default_factory=dict,
            max_length=4096,
            description="The matrix ops whose input activations are quantized in another format than their "
            "weights (e.g. 12-bit weights x 8-bit activations), each with its activation format. Empty (and "
            "left out of the JSON) otherwise.",
        )
    )

    @model_serializer(mode="wrap")
    def _omit_uniform(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in ("layerFormats", "layer_formats", "layerActivationFormats", "layer_activation_formats"):
            if not data.get(key, True):
                del data[key]
        return data


StageSpec = Annotated[TensorflowStageSpec | KerasStageSpec | FpgaStageSpec, Field(discriminator="kind")]
