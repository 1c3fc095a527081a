"""The committed CRDs and their reference are exactly what the generator writes, and valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fpgaserve.api import crdgen
from fpgaserve.api.crd_models import GROUP, VERSION
from tests.operator.helpers import ROOT, assert_valid


def _walk(node: Any) -> list[dict[str, Any]]:
    out = []
    if isinstance(node, dict):
        out.append(node)
        for value in node.values():
            out += _walk(value)
    elif isinstance(node, list):
        for value in node:
            out += _walk(value)
    return out


def test_committed_files_match_the_generator() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, text in crdgen._outputs(ROOT).items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"regenerate with `python -m fpgaserve.api.crdgen`: {stale}"


@pytest.mark.parametrize("directory", crdgen.CRD_DIRS, ids=str)
def test_check_mode_reports_drift(tmp_path: Path, directory: Path) -> None:
    assert crdgen.main(["--root", str(tmp_path)]) == 0  # writes
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 0
    (tmp_path / directory / "fpgamodels.yaml").write_text("edited by hand\n")
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 1
    assert crdgen.main(["--root", str(tmp_path)]) == 0  # rewrites
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 0


def test_a_crd_file_it_no_longer_writes_is_reported_then_removed(tmp_path: Path) -> None:
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    stray = tmp_path / crdgen.CRD_DIRS[1] / "fpgaoldkinds.yaml"
    stray.write_text("a kind since renamed\n")
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 1
    assert stray.exists()
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    assert not stray.exists()


def test_the_chart_ships_the_same_crds() -> None:
    kubectl_dir, chart_dir = (ROOT / directory for directory in crdgen.CRD_DIRS)
    names = sorted(path.name for path in kubectl_dir.glob("*.yaml"))
    assert names == sorted(info.filename for info in crdgen.CRDS)
    assert sorted(path.name for path in chart_dir.glob("*.yaml")) == names
    for name in names:
        assert (chart_dir / name).read_bytes() == (kubectl_dir / name).read_bytes(), name


def test_module_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fpgaserve.api.crdgen", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "crds" / "fpgawebservices.yaml").exists()


@pytest.mark.parametrize("info", crdgen.CRDS, ids=lambda info: info.kind)
def test_crd_is_valid_and_structural(info: crdgen.CrdInfo) -> None:
    crd = yaml.safe_load((ROOT / "crds" / info.filename).read_text())
    assert_valid(crd)
    assert crd["metadata"]["name"] == f"{info.plural}.{GROUP}"
    assert crd["spec"]["names"]["shortNames"] == list(info.short_names)
    (version,) = crd["spec"]["versions"]
    assert version["name"] == VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    for node in _walk(schema):
        # Structural: every node typed (or a map), no references, unions, titles or closed objects.
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title", "$defs"} & set(node)
        assert node.get("additionalProperties", {}) is not False
    assert schema["required"] == ["spec"]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Age"} <= set(columns)
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"


def test_webservice_columns_and_defaults() -> None:
    crd = crdgen.build_crd(crdgen.CRDS[1])
    version = crd["spec"]["versions"][0]
    assert [c["name"] for c in version["additionalPrinterColumns"]][:3] == ["Ready", "Model", "URL"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["model"]
    assert spec["properties"]["auth"]["default"] == {}  # so that nested defaults apply
    assert spec["properties"]["auth"]["properties"]["enabled"]["default"] is True
    assert spec["properties"]["tls"]["properties"]["mode"]["enum"] == ["Disabled", "SelfSigned", "Secret"]
    rules = spec["properties"]["autoscale"]["x-kubernetes-validations"]
    assert rules[0]["rule"] == "self.minReplicas <= self.maxReplicas"


def test_reference_lists_every_field() -> None:
    text = crdgen.render_reference()
    for field in (
        "spec.source.sha256",
        "spec.autoscale.minReplicas",
        "status.conditions[].reason",
        "status.usedBy",
    ):
        assert f"`{field}`" in text


def test_reference_rows_are_whole_and_defaults_read_as_json() -> None:
    text = crdgen.render_reference()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows and all(row.endswith("|") for row in rows), "a table row broke over two lines"
    assert "| `spec.replicas` | integer | `1` |" in text
    assert "| `spec.auth.enabled` | boolean | `true` |" in text
