"""The service-package manifest: the one contract between the SDK, the server and the operator.

Role: the pydantic models of ``manifest.json``, the first member of every ``service_def.zip``.
``fpgaserve.sdk`` writes it, ``fpgaserve.package`` verifies a package against it before anything is
extracted, the pipeline runtime reads its stages, and the operator reports them in an FpgaModel's
status. Dependency-free apart from pydantic. Field names are camelCase on the wire.

A package is a pipeline of stages run in order, each stage's output the next one's input. Every
file in the package is a *member* listed with its sha256 and size; a stage points at its members by
``path``: a SavedModel directory for ``tensorflow``/``keras`` stages, a device program file for
``fpga`` stages. A ``tensorflow``/``keras`` stage that fpgaserve built itself (the zoo's image
preprocessing, a dense classifier) also carries a ``host`` lowering, run with numpy and Pillow
without TensorFlow (``runtime: host``); its SavedModel stays beside it. ``python -m
fpgaserve.api.manifest`` prints the JSON schema (docs/package.md).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SUPPORTED_FORMAT_VERSIONS",
    "BfpFormatSpec",
    "FpgaStageSpec",
    "HostDenseSpec",
    "HostImagePreprocessSpec",
    "HostLoweringSpec",
    "KerasStageSpec",
    "Manifest",
    "ManifestError",
    "MemberSpec",
    "StageSpec",
    "TensorSpecModel",
    "TensorflowStageSpec",
    "is_member_path",
    "manifest_json_schema",
    "parse_manifest",
    "specs_compatible",
]

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = frozenset({FORMAT_VERSION})
MANIFEST_NAME = "manifest.json"

SHA256 = r"^[a-f0-9]{64}$"
# Relative POSIX paths whose components never start with a dot: no "..", no ".", no hidden files,
# no absolute paths, no backslashes. The package reader checks the zip's own names separately.
_COMPONENT = r"[A-Za-z0-9_@+=-][A-Za-z0-9._@+=-]*"
MEMBER_PATH = rf"^{_COMPONENT}(/{_COMPONENT})*$"
STAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_MEMBER_PATH_RE = re.compile(MEMBER_PATH)

MemberPath = Annotated[str, Field(pattern=MEMBER_PATH, min_length=1, max_length=255)]
Sha256 = Annotated[str, Field(pattern=SHA256)]


class ManifestError(ValueError):
    """A manifest that cannot be used: unknown format version, invalid fields, inconsistent stages."""


class _Model(BaseModel):
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


class TensorSpecModel(_Model):
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


class BfpFormatSpec(_Model):
    """The block-floating-point format a device program was quantized to (see docs/numerics.md)."""

    name: str = Field(min_length=1, max_length=64)
    block_size: int = Field(ge=1)
    exponent_bits: int = Field(ge=2, le=8)
    mantissa_bits: int = Field(ge=1, le=15)
    rounding: Literal["nearest", "even", "zero"] = "nearest"


class _StageBase(_Model):
    name: str = Field(pattern=STAGE_NAME, max_length=63, description="Unique within the pipeline.")
    path: MemberPath = Field(description="SavedModel directory or program file, inside the package.")
    input: TensorSpecModel
    output: TensorSpecModel


# -- host lowerings (issue 14): stages fpgaserve built itself, run without TensorFlow -----------------

Channel = Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6)]


class HostImagePreprocessSpec(_Model):
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


class HostDenseSpec(_Model):
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


class MemberSpec(_Model):
    """One file of the package (the manifest itself excluded)."""

    path: MemberPath
    sha256: Sha256
    size: int = Field(ge=0)


class Manifest(_Model):
    """``manifest.json``: what the package holds and how its stages chain."""

    format_version: int = Field(description=f"Package format version; this release reads {FORMAT_VERSION}.")
    name: str = Field(pattern=STAGE_NAME, max_length=63, description="Model name (served as such).")
    version: str = Field(default="1", min_length=1, max_length=128)
    created_by: str = Field(default="", max_length=256, description="Writer and its version.")
    pipeline: list[StageSpec] = Field(min_length=1, max_length=64, description="Stages, run in order.")
    labels: MemberPath | None = Field(default=None, description="Text file, one class name a line.")
    members: list[MemberSpec] = Field(max_length=10_000)

    @model_validator(mode="before")
    @classmethod
    def _known_version_first(cls, data: Any) -> Any:
        # Checked before anything else: a newer format may not fit this schema at all, and
        # "unsupported version" is the error that tells the user what to do.
        if isinstance(data, dict):
            version = data.get("formatVersion", data.get("format_version"))
            if version is None:
                raise ValueError("formatVersion is missing: this is not an fpgaserve package manifest")
            if isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
                raise ValueError(
                    f"formatVersion {version!r} is not supported: this fpgaserve reads "
                    f"{sorted(SUPPORTED_FORMAT_VERSIONS)}; re-save the package with this version's SDK "
                    "or upgrade the server"
                )
        return data

    @field_validator("members")
    @classmethod
    def _unique_members(cls, members: list[MemberSpec]) -> list[MemberSpec]:
        seen: set[str] = set()
        for member in members:
            if member.path in seen or member.path.lower() == MANIFEST_NAME:
                raise ValueError(f"member {member.path!r} is listed twice (or shadows {MANIFEST_NAME})")
            seen.add(member.path)
        return members

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [stage.name for stage in self.pipeline]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        digests = {m.path: m.sha256 for m in self.members}
        for stage in self.pipeline:
            owned = self.stage_members(stage)
            if not owned:
                raise ValueError(f"stage {stage.name!r}: no member at or under path {stage.path!r}")
            if isinstance(stage, FpgaStageSpec) and digests.get(stage.path) != stage.program_sha256:
                raise ValueError(
                    f"stage {stage.name!r}: programSha256 does not match the digest of member {stage.path!r}"
                )
            host = getattr(stage, "host", None)
            if isinstance(host, HostDenseSpec) and host.weights not in digests:
                raise ValueError(f"stage {stage.name!r}: host weights {host.weights!r} are not a member")
        for before, after in zip(self.pipeline, self.pipeline[1:], strict=False):
            if not specs_compatible(before.output, after.input):
                raise ValueError(
                    f"stage {before.name!r} outputs {before.output.describe()} but the next stage "
                    f"{after.name!r} takes {after.input.describe()}: shapes and dtypes must chain"
                )
        if self.labels is not None and self.labels not in digests:
            raise ValueError(f"labels member {self.labels!r} is not listed in members")
        return self

    def stage_members(self, stage: TensorflowStageSpec | KerasStageSpec | FpgaStageSpec) -> list[MemberSpec]:
        """The members a stage owns: its program file, or every file under its SavedModel directory."""
        if isinstance(stage, FpgaStageSpec):
            return [m for m in self.members if m.path == stage.path]
        prefix = stage.path.rstrip("/") + "/"
        return [m for m in self.members if m.path.startswith(prefix)]

    @property
    def input(self) -> TensorSpecModel:
        return self.pipeline[0].input

    @property
    def output(self) -> TensorSpecModel:
        return self.pipeline[-1].output

    @property
    def device_memory_bytes(self) -> int:
        """Device weight memory all FPGA stages need together."""
        return sum(s.weight_bytes for s in self.pipeline if isinstance(s, FpgaStageSpec))

    @property
    def total_size(self) -> int:
        return sum(m.size for m in self.members)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=1, sort_keys=True)


def is_member_path(path: str) -> bool:
    """Whether ``path`` is a well-formed member path (relative, no dot components, no backslashes)."""
    return len(path) <= 255 and _MEMBER_PATH_RE.fullmatch(path) is not None


def parse_manifest(data: bytes | str | dict[str, Any]) -> Manifest:
    """Parse and validate a manifest; every problem is a ``ManifestError`` with a readable message."""
    if not isinstance(data, dict):
        try:
            data = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{MANIFEST_NAME} is not valid JSON ({exc})") from None
        except RecursionError:
            raise ManifestError(f"{MANIFEST_NAME} is nested too deeply to be a manifest") from None
        except ValueError as exc:  # e.g. an integer of more digits than Python converts (4300)
            raise ManifestError(f"{MANIFEST_NAME} is not a usable JSON document ({exc})") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{MANIFEST_NAME} must hold a JSON object")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(f"invalid {MANIFEST_NAME}: {_describe(exc)}") from None
    except RecursionError:
        raise ManifestError(f"{MANIFEST_NAME} is nested too deeply to be a manifest") from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def manifest_json_schema() -> dict[str, Any]:
    """The JSON schema of ``manifest.json`` (camelCase field names)."""
    schema = Manifest.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://fpgaserve.io/schemas/package-manifest-v{FORMAT_VERSION}.json",
        **schema,
    }


if __name__ == "__main__":
    print(json.dumps(manifest_json_schema(), indent=2, sort_keys=True))
