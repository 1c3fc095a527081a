"""The Helm chart (charts/fpgaserve), rendered and linted by Helm itself through helm-python-sdk.

helm-python-sdk binds Helm's Go SDK (``libhelm_c``): ``Chart.render`` is ``helm template`` and
``helm_python.lint`` is ``helm lint``, with no helm binary and no cluster. The chart's objects
must be the ones ``fpgaserve operator manifest`` and ``fpgaserve device-plugin manifest`` build
(same RBAC rules, same pod specs), valid for the Kubernetes API, over the committed CRDs.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from fpgaserve.api import crdgen
from fpgaserve.api.constants import SLIM_IMAGE
from fpgaserve.deviceplugin.daemonset import build_daemonset
from fpgaserve.dra import manifest as dra_manifest
from fpgaserve.operator.config import DEFAULT_IMAGE, DEFAULT_OPERATOR_IMAGE
from fpgaserve.operator.install_objects import (
    DEFAULT_NAME,
    DEFAULT_NAMESPACE,
    LIVENESS_PORT,
    RULES,
    build_manifest,
)
from tests.operator.helpers import ROOT, assert_valid

CHART_DIR = ROOT / "charts" / "fpgaserve"
# With this release name the chart's objects have the names `fpgaserve operator manifest` uses.
RELEASE = "fpgaserve"
NAMESPACE = DEFAULT_NAMESPACE
CUSTOM_IMAGE = {"repository": "registry.example/fpgaserve", "tag": "1.2.3"}
CUSTOM_SLIM_IMAGE = {"repository": "registry.example/fpgaserve-slim", "tag": "1.2.3"}
WATCHED = ["team-a", "team-b"]
Renders = dict[str, list[dict[str, Any]]]

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "device-plugin": {"devicePlugin": {"enabled": True}},
    "device-plugin-custom": {
        "image": CUSTOM_IMAGE,
        "slimImage": CUSTOM_SLIM_IMAGE,
        "devicePlugin": {
            "enabled": True,
            "namespace": "fpga-system",
            "deviceCount": 2,
            "deviceModel": "pbs-a10",
            "healthIntervalSeconds": 0.5,
            "nodeSelector": {"fpgaserve.io/fpga-node": "true"},
        },
    },
    "custom-image": {"image": CUSTOM_IMAGE},
    "dra": {"dra": {"enabled": True}},
    "dra-custom": {
        "image": CUSTOM_IMAGE,
        "slimImage": CUSTOM_SLIM_IMAGE,
        "dra": {
            "enabled": True,
            "namespace": "fpga-system",
            "deviceCount": 2,
            "deviceModel": "pbs-a10",
            "nodeSelector": {"fpgaserve.io/fpga-node": "true"},
        },
    },
    "namespaced": {"watchNamespaces": WATCHED},
    "peering": {"replicaCount": 2, "peering": {"enabled": True}},
    "namespaced-peering": {"watchNamespaces": WATCHED, "replicaCount": 2, "peering": {"enabled": True}},
}
# What `fpgaserve operator manifest` is given for the same installation as each operator variant.
MANIFEST_ARGS: dict[str, dict[str, Any]] = {
    "default": {},
    "custom-image": {"image": "registry.example/fpgaserve:1.2.3"},
    "namespaced": {"watch_namespaces": WATCHED},
    "peering": {"peering": True, "replicas": 2},
    "namespaced-peering": {"watch_namespaces": WATCHED, "peering": True, "replicas": 2},
}


class _StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; a template that repeats a label must fail instead."""


def _no_duplicate_keys(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(key) for key, _ in node.value]
    duplicates = {key for key in keys if keys.count(key) > 1}
    if duplicates:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {duplicates}", node.start_mark)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def parse(manifests: dict[str, str]) -> list[dict[str, Any]]:
    """The objects of a render (``{template path: text}``); NOTES.txt is not YAML."""
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml"):
            objects += [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc]
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def rendered(chart: helm.Chart) -> Renders:
    """Every variant rendered once for the module (the tests only read them)."""
    return {
        name: parse(chart.render(values, name=RELEASE, namespace=NAMESPACE))
        for name, values in VARIANTS.items()
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_lint_passes(variant: str) -> None:
    report = helm.lint(CHART_DIR, VARIANTS[variant], strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    # Severity 1 is information ("icon is recommended"); 2 and up are warnings and errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_objects_are_valid(rendered: Renders, variant: str) -> None:
    objects = rendered[variant]
    assert objects
    for obj in objects:
        if obj["apiVersion"].startswith("resource.k8s.io/"):  # served from Kubernetes 1.34 on
            kubernetes_validate.validate(obj, "1.34", strict=True)
        elif obj["apiVersion"] != "kopf.dev/v1":  # kopf's own peering objects have no public schema
            assert_valid(obj)
        if obj["kind"] in ("ServiceAccount", "Deployment") and not obj["metadata"]["name"].endswith(
            "dra-driver"
        ):
            assert obj["metadata"]["namespace"] == NAMESPACE  # explicit, as `helm template` prints it
    for workload in by_kind(objects, "Deployment") + by_kind(objects, "DaemonSet"):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("variant", MANIFEST_ARGS)
def test_rbac_is_the_manifests(rendered: Renders, variant: str) -> None:
    def rbac(objects: list[dict[str, Any]]) -> list[str]:
        """Each RBAC object without its labels (the chart adds Helm's), as comparable text."""
        return sorted(
            json.dumps({**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "labels"}})
            for o in objects
            if o["apiVersion"].startswith("rbac.authorization.k8s.io/")
        )

    manifest = build_manifest(namespace=NAMESPACE, **MANIFEST_ARGS[variant])
    assert rbac(rendered[variant]) == rbac(manifest)
    assert by_kind(rendered[variant], "ServiceAccount")[0]["metadata"]["name"] == DEFAULT_NAME


def test_default_rules_are_exactly_rules(rendered: Renders) -> None:
    (role,) = by_kind(rendered["default"], "ClusterRole")
    assert role["rules"] == RULES


@pytest.mark.parametrize("variant", MANIFEST_ARGS)
def test_operator_deployment_is_the_manifests(rendered: Renders, variant: str) -> None:
    """The chart's defaults are the manifest's: the whole pod spec (command line, probe, security,
    resources) and the rollout strategy must agree, not only the arguments."""
    (chart_deployment,) = by_kind(rendered[variant], "Deployment")
    (deployment,) = by_kind(build_manifest(namespace=NAMESPACE, **MANIFEST_ARGS[variant]), "Deployment")
    assert pod_spec(chart_deployment) == pod_spec(deployment)
    for field in ("replicas", "strategy"):
        assert chart_deployment["spec"][field] == deployment["spec"][field]
    (container,) = pod_spec(chart_deployment)["containers"]
    assert f"--liveness=http://0.0.0.0:{LIVENESS_PORT}/healthz" in container["args"]
    assert container["ports"][0]["containerPort"] == LIVENESS_PORT


def test_peering_objects(rendered: Renders) -> None:
    def peerings(objects: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        return [
            (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", ""))
            for o in objects
            if o["apiVersion"] == "kopf.dev/v1"
        ]

    for variant in ("default", "namespaced"):
        assert peerings(rendered[variant]) == []
    for variant in ("peering", "namespaced-peering"):
        manifest = build_manifest(namespace=NAMESPACE, **MANIFEST_ARGS[variant])
        assert peerings(rendered[variant]) == peerings(manifest)
        # kopf's peering CRDs are a prerequisite, never part of the release (see the chart's README).
        assert by_kind(rendered[variant], "CustomResourceDefinition") == []


def test_server_image_pull_policy_and_extra_args(chart: helm.Chart) -> None:
    values = {
        "image": {**CUSTOM_IMAGE, "pullPolicy": "Always"},
        "operatorImage": {"repository": "registry.example/fpgaserve-operator", "tag": "1.2.3"},
        "serverImage": "registry.example/server:2.0",
        "extraArgs": ["--resync-seconds=30"],
    }
    (deployment,) = by_kind(parse(chart.render(values, name=RELEASE, namespace=NAMESPACE)), "Deployment")
    (container,) = pod_spec(deployment)["containers"]
    (manifest_deployment,) = by_kind(build_manifest(image="registry.example/server:2.0"), "Deployment")
    (expected,) = pod_spec(manifest_deployment)["containers"]
    assert container["image"] == "registry.example/fpgaserve-operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"] == [*expected["args"], "--resync-seconds=30"]


def test_another_release_name_renames_everything(chart: helm.Chart) -> None:
    objects = parse(chart.render({"peering": {"enabled": True}}, name="ml", namespace="ml-system"))
    names = {o["metadata"]["name"] for o in objects}
    assert names == {"ml-operator"}
    (binding,) = by_kind(objects, "ClusterRoleBinding")
    subject = {"kind": "ServiceAccount", "name": "ml-operator", "namespace": "ml-system"}
    assert binding["subjects"] == [subject]
    (deployment,) = by_kind(objects, "Deployment")
    assert "--peering=ml-operator" in pod_spec(deployment)["containers"][0]["args"]


def test_device_plugin_is_off_by_default(rendered: Renders) -> None:
    assert by_kind(rendered["default"], "DaemonSet") == []


def test_device_plugin_is_the_manifests(rendered: Renders) -> None:
    (daemonset,) = by_kind(rendered["device-plugin"], "DaemonSet")
    expected = build_daemonset()
    assert pod_spec(daemonset) == pod_spec(expected)
    # Every node pulls the image without TensorFlow.
    assert pod_spec(daemonset)["containers"][0]["image"] == SLIM_IMAGE
    assert daemonset["metadata"]["name"] == expected["metadata"]["name"]
    assert daemonset["metadata"]["namespace"] == expected["metadata"]["namespace"] == "kube-system"

    (custom,) = by_kind(rendered["device-plugin-custom"], "DaemonSet")
    expected = build_daemonset(
        namespace="fpga-system",
        image="registry.example/fpgaserve-slim:1.2.3",  # slimImage, not image
        device_count=2,
        device_model="pbs-a10",
        health_interval=0.5,
        node_selector={"fpgaserve.io/fpga-node": "true"},
    )
    assert pod_spec(custom) == pod_spec(expected)
    assert custom["metadata"]["namespace"] == "fpga-system"


def test_dra_driver_is_off_by_default(rendered: Renders) -> None:
    assert by_kind(rendered["default"], "DeviceClass") == []
    assert by_kind(rendered["device-plugin"], "ValidatingAdmissionPolicy") == []


def _without_labels(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj["metadata"].items() if k != "labels"}
    return {**obj, "metadata": meta}


def test_dra_driver_is_the_manifests(rendered: Renders) -> None:
    objects = rendered["dra"]
    (daemonset,) = [d for d in by_kind(objects, "DaemonSet") if d["metadata"]["name"].endswith("dra-driver")]
    expected = dra_manifest.build_daemonset()
    assert pod_spec(daemonset) == pod_spec(expected)
    assert daemonset["metadata"]["namespace"] == "kube-system"
    (device_class,) = by_kind(objects, "DeviceClass")
    assert _without_labels(device_class) == dra_manifest.build_device_class()
    # RBAC limited to what the driver does: the same rules, bound to its own service account.
    for built in dra_manifest.build_rbac() + dra_manifest.build_slice_policy():
        (found,) = [
            o for o in by_kind(objects, built["kind"]) if o["metadata"]["name"] == built["metadata"]["name"]
        ]
        assert _without_labels(found) == built, built["kind"]

    (custom,) = by_kind(rendered["dra-custom"], "DaemonSet")
    expected = dra_manifest.build_daemonset(
        namespace="fpga-system",
        image="registry.example/fpgaserve-slim:1.2.3",  # slimImage, not image
        device_count=2,
        device_model="pbs-a10",
        node_selector={"fpgaserve.io/fpga-node": "true"},
    )
    assert pod_spec(custom) == pod_spec(expected)
    policies = by_kind(rendered["dra-custom"], "ValidatingAdmissionPolicy")
    assert "system:serviceaccount:fpga-system:fpgaserve-dra-driver" in str(
        policies[0]["spec"]["matchConditions"]
    )


def test_default_image_is_the_projects(chart: helm.Chart, rendered: Renders) -> None:
    assert chart.metadata["appVersion"] == importlib.metadata.version("fpgaserve")
    (deployment,) = by_kind(rendered["default"], "Deployment")
    (container,) = pod_spec(deployment)["containers"]
    # The operator runs the slim image and gives web services the full one.
    assert container["image"] == DEFAULT_OPERATOR_IMAGE
    assert f"--image={DEFAULT_IMAGE}" in container["args"]


def test_crds_are_the_committed_ones(chart: helm.Chart) -> None:
    shipped = {crd["filename"].rpartition("/")[2]: crd["data"] for crd in chart.crds}
    assert sorted(shipped) == sorted(info.filename for info in crdgen.CRDS)
    for filename, text in shipped.items():
        assert text.encode() == (ROOT / "crds" / filename).read_bytes(), filename
        assert_valid(yaml.safe_load(text))


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        ({"replicaCount": 2}, helm.HelmRenderError, "needs peering"),
        ({"devicePlugin": {"enable": True}}, helm.HelmValuesError, "'enable' not allowed"),
        ({"watchNamespaces": ["Team_A"]}, helm.HelmValuesError, "does not match pattern"),
    ],
    ids=["replicas-without-peering", "misspelt-value", "invalid-namespace"],
)
def test_invalid_values_are_refused(
    chart: helm.Chart, values: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
