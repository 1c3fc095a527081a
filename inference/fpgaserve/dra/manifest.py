"""The objects that install the DRA driver: its DaemonSet, DeviceClass and RBAC.

Role: pure builders (no client, no I/O), the reference the Helm chart's ``dra.enabled`` templates
are tested against (tests/charts). The driver's RBAC is what it does and no more: get, create and
patch ResourceSlices, get ResourceClaims (read-only) and get its Node (the slice's owner). RBAC
cannot scope a ResourceSlice to a node, so a ValidatingAdmissionPolicy does: a request from the
driver's service account may write only the slice whose ``spec.nodeName`` is the node its pod runs
on (the node name Kubernetes puts in the pod-bound token, 1.32+).
"""

from __future__ import annotations

import json
from typing import Any

from fpgaserve.api.constants import DRA_DEVICE_CLASS, DRA_DRIVER_NAME, SLIM_IMAGE
from fpgaserve.deviceplugin.daemonset import node_agent_daemonset
from fpgaserve.dra.pluginregistration import DEFAULT_REGISTRY_DIR

__all__ = [
    "CDI_DIR",
    "DEFAULT_IMAGE",
    "DEFAULT_NAME",
    "DEFAULT_NAMESPACE",
    "PLUGIN_DIR",
    "RULES",
    "STATE_DIR",
    "build_daemonset",
    "build_device_class",
    "build_rbac",
    "build_slice_policy",
]

DEFAULT_NAME = "fpgaserve-dra-driver"
DEFAULT_NAMESPACE = "kube-system"
DEFAULT_IMAGE = SLIM_IMAGE  # the driver needs numpy and grpc, not TensorFlow
PLUGIN_DIR = f"/var/lib/kubelet/plugins/{DRA_DRIVER_NAME}"
STATE_DIR = f"{PLUGIN_DIR}/devices"
CDI_DIR = "/var/run/cdi"

RULES: list[dict[str, Any]] = [
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
]


def build_device_class(*, driver: str = DRA_DRIVER_NAME, name: str = DRA_DEVICE_CLASS) -> dict[str, Any]:
    """The DeviceClass claims name: every device of the driver (claims narrow it further)."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {"selectors": [{"cel": {"expression": f"device.driver == {json.dumps(driver)}"}}]},
    }


def build_rbac(*, name: str = DEFAULT_NAME, namespace: str = DEFAULT_NAMESPACE) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole (``RULES``) and ClusterRoleBinding."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


def build_slice_policy(
    *, name: str = DEFAULT_NAME, namespace: str = DEFAULT_NAMESPACE
) -> list[dict[str, Any]]:
    """The admission policy (and its binding) that keeps each driver pod to its own node's slice."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": f"{name}-resourceslices"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["resource.k8s.io"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE", "DELETE"],
                        "resources": ["resourceslices"],
                    }
                ]
            },
            "matchConditions": [
                {
                    "name": "isDriver",
                    "expression": f'request.userInfo.username == "system:serviceaccount:{namespace}:{name}"',
                }
            ],
            "variables": [
                {
                    "name": "nodeName",
                    "expression": (
                        'string(request.userInfo.extra[?"authentication.kubernetes.io/node-name"][0]'
                        '.orValue(""))'
                    ),
                },
                {
                    "name": "objectNodeName",
                    "expression": '(request.operation == "DELETE" ? oldObject : object).spec.?nodeName.orValue("")',
                },
            ],
            "validations": [
                {"expression": 'variables.nodeName != ""', "message": "no node name in the driver's token"},
                {
                    "expression": "variables.objectNodeName == variables.nodeName",
                    "messageExpression": (
                        '"the fpgaserve DRA driver on node " + variables.nodeName + '
                        '" may write only that node\'s ResourceSlice"'
                    ),
                },
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": f"{name}-resourceslices"},
        "spec": {"policyName": f"{name}-resourceslices", "validationActions": ["Deny"]},
    }
    return [policy, binding]


def build_daemonset(
    *,
    namespace: str = DEFAULT_NAMESPACE,
    image: str = DEFAULT_IMAGE,
    device_count: int = 4,
    device_model: str = "pbs-s10",
    health_interval: float = 2.0,
    name: str = DEFAULT_NAME,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The driver's DaemonSet: the kubelet's plugins and plugins_registry directories and the CDI
    directory from the host; root (they are root-owned) with no capabilities."""
    command = [
        "fpgaserve",
        "dra-driver",
        f"--device-count={device_count}",
        f"--device-model={device_model}",
        f"--health-interval={health_interval:g}",
        f"--plugin-dir={PLUGIN_DIR}",
        f"--state-dir={STATE_DIR}",
        f"--registry-dir={DEFAULT_REGISTRY_DIR}",
        f"--cdi-dir={CDI_DIR}",
    ]
    return node_agent_daemonset(
        name=name,
        namespace=namespace,
        component="dra-driver",
        container={"name": "dra-driver", "image": image, "command": command},
        host_paths={
            "plugins": ("/var/lib/kubelet/plugins", "DirectoryOrCreate"),
            "plugins-registry": (DEFAULT_REGISTRY_DIR, "DirectoryOrCreate"),
            "cdi": (CDI_DIR, "DirectoryOrCreate"),
        },
        tolerations=[{"key": "CriticalAddonsOnly", "operator": "Exists"}],
        node_selector=node_selector,
        service_account=name,
    )
