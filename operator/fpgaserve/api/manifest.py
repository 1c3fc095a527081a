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
fpgaserve.api.manifest`` prints the JSON schema (docs/package.md). The stage models live in
``manifest_stages`` (to keep each file to one role) and are imported from here.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from fpgaserve.api.manifest_stages import (
    STAGE_NAME,
    BfpFormatSpec,
    FpgaStageSpec,
    HostDenseSpec,
    HostImagePreprocessSpec,
    HostLoweringSpec,
    KerasStageSpec,
    ManifestModel,
    MemberPath,
    Sha256,
    StageSpec,
    TensorflowStageSpec,
    TensorSpecModel,
    is_member_path,
    specs_compatible,
)

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


class ManifestError(ValueError):
    """A manifest that cannot be used: unknown format version, invalid fields, inconsistent stages."""


class MemberSpec(ManifestModel):
    """One file of the package (the manifest itself excluded)."""

    path: MemberPath
    sha256: Sha256
    size: int = Field(ge=0)


class Manifest(ManifestModel):
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
