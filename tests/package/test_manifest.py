"""The manifest schema (fpgaserve.api.manifest): versions, chaining, digests, JSON schema, no heavy imports."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from fpgaserve.api.manifest import (
    FORMAT_VERSION,
    FpgaStageSpec,
    ManifestError,
    TensorSpecModel,
    manifest_json_schema,
    parse_manifest,
    specs_compatible,
)
from tests.package.hostile import manifest_for, valid_members


def manifest(**overrides: Any) -> dict[str, Any]:
    return manifest_for(valid_members(), **overrides)


def test_round_trip_through_json() -> None:
    parsed = parse_manifest(manifest())
    assert parse_manifest(parsed.to_json()) == parsed
    assert parsed.input.dtype == "string" and parsed.output.shape == (2,)
    assert parsed.device_memory_bytes == 1234
    fpga = parsed.pipeline[1]
    assert isinstance(fpga, FpgaStageSpec) and fpga.format.block_size == 16
    assert [m.path for m in parsed.stage_members(parsed.pipeline[0])] == [
        "stages/00-preprocess/saved_model.pb",
        "stages/00-preprocess/variables/variables.index",
    ]


@pytest.mark.parametrize("version", [0, 2, "1", True, None])
def test_only_known_format_versions(version: object) -> None:
    data = manifest(formatVersion=version)
    with pytest.raises(ManifestError, match="formatVersion"):
        parse_manifest(data)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ManifestError, match="signedBy: Extra inputs are not permitted"):
        parse_manifest(manifest(signedBy="someone"))


def test_stage_without_members() -> None:
    data = manifest()
    data["pipeline"][2]["path"] = "stages/99-missing"
    with pytest.raises(ManifestError, match="no member at or under path 'stages/99-missing'"):
        parse_manifest(data)


def test_duplicate_stage_names_and_members() -> None:
    data = manifest()
    data["pipeline"][2]["name"] = "preprocess"
    with pytest.raises(ManifestError, match="stage names must be unique"):
        parse_manifest(data)
    data = manifest()
    data["members"].append(dict(data["members"][0]))
    with pytest.raises(ManifestError, match="listed twice"):
        parse_manifest(data)


@pytest.mark.parametrize("path", ["../x", "/abs", "a/./b", ".hidden", "a\\b", "a//b"])
def test_member_paths_are_relative_and_plain(path: str) -> None:
    data = manifest()
    data["members"][0]["path"] = path
    with pytest.raises(ManifestError, match=r"members\.0\.path"):
        parse_manifest(data)


def test_labels_must_be_a_member() -> None:
    with pytest.raises(ManifestError, match=r"labels member 'names\.txt' is not listed"):
        parse_manifest(manifest(labels="names.txt"))


def test_dtype_mismatch_between_stages() -> None:
    data = manifest()
    data["pipeline"][0]["output"]["dtype"] = "int64"
    with pytest.raises(ManifestError, match=r"'preprocess' outputs int64\[32, 32, 3\].*'fpga' takes float32"):
        parse_manifest(data)


def test_specs_compatible_treats_none_as_any_size() -> None:
    def spec(*shape: int | None) -> TensorSpecModel:
        return TensorSpecModel(name="t", dtype="float32", shape=shape)

    assert specs_compatible(spec(8), spec(None))
    assert specs_compatible(spec(None, 3), spec(4, 3))
    assert not specs_compatible(spec(8), spec(9))
    assert not specs_compatible(spec(8), spec(8, 1))


def test_json_schema_export() -> None:
    schema = manifest_json_schema()
    assert schema["$id"].endswith(f"package-manifest-v{FORMAT_VERSION}.json")
    assert {"formatVersion", "pipeline", "members", "labels"} <= set(schema["properties"])
    stage = schema["properties"]["pipeline"]["items"]
    assert set(stage["discriminator"]["mapping"]) == {"tensorflow", "keras", "fpga"}
    assert "programSha256" in schema["$defs"]["FpgaStageSpec"]["properties"]


def test_operator_side_imports_stay_light() -> None:
    # The operator imports the manifest, and storage-init the reader: neither may load numpy or TF.
    code = (
        "import sys, fpgaserve.api.manifest, fpgaserve.package, fpgaserve.package.fetch, "
        "fpgaserve.cli.storage_init; "
        "heavy = {'numpy', 'tensorflow', 'keras'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
