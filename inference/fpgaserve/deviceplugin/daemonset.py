"""The DaemonSet that runs the device plugin on every node.

Role: a pure builder (no client, no I/O) used by ``fpgaserve device-plugin manifest``, by the
rendered ``docs/device-plugin-daemonset.yaml`` (a drift test keeps them equal), and the reference the
Helm chart's template is tested against. The container mounts only the kubelet's device-plugins host directory: the plugin's socket
lives there, and so do the devices' state directories (the kubelet's restart clean-up removes
sockets, never directories), so that ``Allocate`` can mount them into pods by host path.
"""

from __future__ import annotations

from typing import Any

from fpgaserve.api.constants import DEFAULT_RESOURCE_NAME, SLIM_IMAGE
from fpgaserve.deviceplugin.v1beta1 import DEFAULT_SOCKET_DIR

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_NAME",
    "DEFAULT_NAMESPACE",
    "DEFAULT_STATE_DIR",
    "build_daemonset",
    "node_agent_daemonset",
    "render_yaml",
]

DEFAULT_NAME = "fpgaserve-device-plugin"
DEFAULT_NAMESPACE = "kube-system"
DEFAULT_IMAGE = SLIM_IMAGE  # the plugin needs numpy and grpc, not TensorFlow
DEFAULT_STATE_DIR = f"{DEFAULT_SOCKET_DIR}/fpgaserve"


def node_agent_daemonset(
    *,
    name: str,
    namespace: str,
    component: str,
    container: dict[str, Any],
    host_paths: dict[str, tuple[str, str]],
    tolerations: list[dict[str, str]],
    node_selector: dict[str, str] | None,
    service_account: str | None = None,
) -> dict[str, Any]:
    """A DaemonSet of one root container that talks to the kubelet through host directories.

    Shared by the device plugin and the DRA driver (``fpgaserve.dra.manifest``): ``container`` gets
    the node name, small resources, root without capabilities on a read-only root filesystem, and
    one mount per ``host_paths`` entry (volume name -> (host path, hostPath type)), at the same path.
    """
    labels = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "fpgaserve",
    }
    container = {
        **container,
        "imagePullPolicy": "IfNotPresent",
        # Device IDs derive from the node name; a pod's hostname would change with every rollout.
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        # Root, whatever the image's user: the kubelet's directories are root-owned. No capabilities
        # are needed to write there as their owner.
        "securityContext": {
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": volume, "mountPath": path} for volume, (path, _) in host_paths.items()],
    }
    pod_spec: dict[str, Any] = {
        **(
            {"serviceAccountName": service_account}
            if service_account
            else {"automountServiceAccountToken": False}
        ),
        # Without it the node's FPGAs vanish from the scheduler, or no claim there can be prepared:
        # evict it last.
        "priorityClassName": "system-node-critical",
        "terminationGracePeriodSeconds": 10,
        "tolerations": tolerations,
        "nodeSelector": {"kubernetes.io/os": "linux", **(node_selector or {})},
        "containers": [container],
        "volumes": [
            {"name": volume, "hostPath": {"path": path, "type": kind}}
            for volume, (path, kind) in host_paths.items()
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
        },
    }


def build_daemonset(
    *,
    namespace: str = DEFAULT_NAMESPACE,
    image: str = DEFAULT_IMAGE,
    resource_name: str = DEFAULT_RESOURCE_NAME,
    device_count: int = 4,
    device_model: str = "pbs-s10",
    health_interval: float = 2.0,
    name: str = DEFAULT_NAME,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The plugin's DaemonSet as a plain dict; ``node_selector`` (e.g. a label of FPGA nodes) is
    added to the Linux-only selector."""
    command = [
        "fpgaserve",
        "device-plugin",
        f"--device-count={device_count}",
        f"--device-model={device_model}",
        f"--resource-name={resource_name}",
        f"--health-interval={health_interval:g}",
        f"--socket-dir={DEFAULT_SOCKET_DIR}",
        f"--state-dir={DEFAULT_STATE_DIR}",
    ]
    return node_agent_daemonset(
        name=name,
        namespace=namespace,
        component="device-plugin",
        container={"name": "device-plugin", "image": image, "command": command},
        host_paths={"device-plugins": (DEFAULT_SOCKET_DIR, "Directory")},
        # Nodes reserved for FPGA work are usually tainted with the resource name.
        tolerations=[
            {"key": resource_name, "operator": "Exists", "effect": "NoSchedule"},
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
        ],
        node_selector=node_selector,
    )


def render_yaml(obj: dict[str, Any]) -> str:
    """YAML for a manifest, with a header saying where it comes from."""
    import yaml  # only the manifest command renders YAML; the plugin itself never does

    header = "# Generated by `fpgaserve device-plugin manifest`; do not edit by hand.\n"
    return header + yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)
