"""The device plugin's DaemonSet: builder, schema validation, and the rendered docs copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fpgaserve.deviceplugin.daemonset import DEFAULT_STATE_DIR, build_daemonset, render_yaml

RENDERED = Path(__file__).resolve().parents[2] / "docs" / "device-plugin-daemonset.yaml"


def _container(daemonset: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = daemonset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_runs_the_cli_with_the_given_devices() -> None:
    daemonset = build_daemonset(
        namespace="fpga",
        image="example/fpgaserve:1",
        resource_name="example.com/fpga",
        device_count=2,
        device_model="pbs-tiny",
    )
    assert daemonset["metadata"]["namespace"] == "fpga"
    container = _container(daemonset)
    assert container["image"] == "example/fpgaserve:1"
    assert container["command"][:2] == ["fpgaserve", "device-plugin"]
    assert {"--device-count=2", "--device-model=pbs-tiny", "--resource-name=example.com/fpga"} <= set(
        container["command"]
    )
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in container[
        "env"
    ]


def test_mounts_only_the_kubelet_device_plugins_directory() -> None:
    daemonset = build_daemonset()
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {
            "name": "device-plugins",
            "hostPath": {"path": "/var/lib/kubelet/device-plugins", "type": "Directory"},
        }
    ]
    assert _container(daemonset)["volumeMounts"] == [
        {"name": "device-plugins", "mountPath": "/var/lib/kubelet/device-plugins"}
    ]
    # The state directories must live inside that mount so the kubelet can mount them into pods.
    assert DEFAULT_STATE_DIR.startswith("/var/lib/kubelet/device-plugins/")
    assert f"--state-dir={DEFAULT_STATE_DIR}" in _container(daemonset)["command"]


def test_selects_pods_by_its_own_labels_and_adds_node_selectors() -> None:
    daemonset = build_daemonset(node_selector={"fpgaserve.io/fpga-node": "true"})
    spec = daemonset["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert spec["template"]["spec"]["nodeSelector"] == {
        "kubernetes.io/os": "linux",
        "fpgaserve.io/fpga-node": "true",
    }


@pytest.mark.parametrize("version", ["1.30", kubernetes_validate.latest_version()])
def test_validates_against_the_kubernetes_schema(version: str) -> None:
    kubernetes_validate.validate(build_daemonset(node_selector={"a": "b"}), version, strict=True)


def test_the_schema_check_would_catch_a_mistake() -> None:
    broken = build_daemonset()
    _container(broken)["volumeMount"] = []  # typo: strict validation rejects unknown fields
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)


def test_rendered_docs_manifest_is_up_to_date() -> None:
    expected = render_yaml(build_daemonset())
    assert RENDERED.read_text() == expected, (
        "docs/device-plugin-daemonset.yaml is out of date; run "
        "`fpgaserve device-plugin manifest > docs/device-plugin-daemonset.yaml`"
    )
    assert yaml.safe_load(expected) == build_daemonset()
