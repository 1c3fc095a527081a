"""The operator's own installation: ServiceAccount, RBAC, Deployment (and kopf's peering CRDs).

Role: pure builders used by ``fpgaserve operator manifest``. ``RULES`` lists exactly the API
access the operator uses (``tests/operator/test_install_objects.py`` checks it against the ``Kube``
wrapper's kinds and kopf's needs): its two CRDs (watch, patch, status), the objects it owns
(get, create, patch; delete for those a spec can turn off; list and watch for those it watches,
never for Secrets), Secrets named in a spec (get), its web services' pods (list, watch: read only),
and Events.
Namespaced installs bind the rules per watched namespace with RoleBindings; cluster-wide ones
with a ClusterRoleBinding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from fpgaserve.api.crd_models import GROUP, MODEL_PLURAL, WEBSERVICE_PLURAL
from fpgaserve.operator.config import DEFAULT_IMAGE, DEFAULT_OPERATOR_IMAGE

__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_NAMESPACE",
    "LIVENESS_PORT",
    "PEERING_RULES",
    "RULES",
    "build_manifest",
    "build_peering_crds",
    "render_yaml",
]

DEFAULT_NAME = "fpgaserve-operator"
DEFAULT_NAMESPACE = "fpgaserve-system"
LIVENESS_PORT = 8080
_OWNED = ["get", "create", "patch", "delete"]
# Watched (handlers.OWNED_WATCHES) and never deleted by the operator: the garbage collector
# removes them with their web service.
_ALWAYS_OWNED_WATCHED = ["get", "list", "watch", "create", "patch"]
_OWNED_WATCHED = ["get", "list", "watch", "create", "patch", "delete"]

RULES: list[dict[str, Any]] = [
    # kopf lists and watches the custom resources and patches them (finalizers, its annotations);
    # the reconcilers get models and list web services (who uses a model).
    {
        "apiGroups": [GROUP],
        "resources": [MODEL_PLURAL, WEBSERVICE_PLURAL],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {
        "apiGroups": [GROUP],
        "resources": [f"{MODEL_PLURAL}/status", f"{WEBSERVICE_PLURAL}/status"],
        "verbs": ["patch"],
    },
    # Owned objects it also watches (handlers.OWNED_WATCHES): changes refresh the owner at once.
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": _ALWAYS_OWNED_WATCHED},
    {"apiGroups": [""], "resources": ["services"], "verbs": _ALWAYS_OWNED_WATCHED},
    {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": _OWNED_WATCHED},
    # Secrets are never listed or watched: that would read every Secret in the namespace.
    {"apiGroups": [""], "resources": ["secrets"], "verbs": _OWNED},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": _OWNED},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": _OWNED},
    # FpgaWebservices in DRA mode (spec.fpga.mode), one template each.
    {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaimtemplates"], "verbs": _OWNED},
    # Read only: why a web service's pods do not come up (scheduling, image pulls, crashes).
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
# Only with --peering: kopf's peering objects, so that one replica of several is active.
PEERING_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": ["get", "list", "watch", "patch"]},
]
_CLUSTER_PEERING_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["get", "list", "watch", "patch"],
    },
]


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "fpgaserve"}


def _rbac(
    *, name: str, namespace: str, watch_namespaces: Sequence[str] | None, peering: bool
) -> list[dict[str, Any]]:
    rules = [*RULES, *(PEERING_RULES if peering else [])]
    if peering and watch_namespaces is None:
        rules += _CLUSTER_PEERING_RULES
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": _labels(name)},
        "rules": rules,
    }
    subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}
    if watch_namespaces is None:
        bindings = [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name, "labels": _labels(name)},
                "roleRef": role_ref,
                "subjects": [subject],
            }
        ]
    else:
        # A RoleBinding to the ClusterRole grants its rules in that one namespace only.
        bindings = [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": watched, "labels": _labels(name)},
                "roleRef": role_ref,
                "subjects": [subject],
            }
            for watched in watch_namespaces
        ]
    return [role, *bindings]


def _deployment(
    *,
    name: str,
    namespace: str,
    image: str,
    operator_image: str,
    watch_namespaces: Sequence[str] | None,
    peering: bool,
    replicas: int,
) -> dict[str, Any]:
    args = [f"--image={image}", f"--liveness=http://0.0.0.0:{LIVENESS_PORT}/healthz"]
    args += (
        ["--all-namespaces"] if watch_namespaces is None else [f"--namespace={ns}" for ns in watch_namespaces]
    )
    if peering:
        args.append(f"--peering={name}")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(name)},
        "spec": {
            "replicas": replicas,
            # Without peering two replicas would both act: replace, never overlap.
            "strategy": {"type": "RollingUpdate" if peering else "Recreate"},
            "selector": {"matchLabels": _labels(name)},
            "template": {
                "metadata": {"labels": _labels(name)},
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": "operator",
                            # The slim image; ``image`` (the full one) is for the web services.
                            "image": operator_image,
                            "imagePullPolicy": "IfNotPresent",
                            # The operator's own entry point: the process imports the operator
                            # root alone (no console script, no inference code).
                            "command": ["python", "-m", "fpgaserve.operator"],
                            "args": args,
                            "ports": [
                                {"name": "liveness", "containerPort": LIVENESS_PORT, "protocol": "TCP"}
                            ],
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "liveness"},
                                "periodSeconds": 20,
                                "timeoutSeconds": 5,
                                "failureThreshold": 3,
                            },
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "128Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def build_peering_crds() -> list[dict[str, Any]]:
    """kopf's KopfPeering and ClusterKopfPeering CRDs (needed only with --peering)."""
    crds = []
    for kind, plural, scope in (
        ("KopfPeering", "kopfpeerings", "Namespaced"),
        ("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
    ):
        crds.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.kopf.dev"},
                "spec": {
                    "group": "kopf.dev",
                    "scope": scope,
                    "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    ],
                },
            }
        )
    return crds


def build_manifest(
    *,
    namespace: str = DEFAULT_NAMESPACE,
    image: str = DEFAULT_IMAGE,
    operator_image: str = DEFAULT_OPERATOR_IMAGE,
    watch_namespaces: Sequence[str] | None = None,
    peering: bool = False,
    replicas: int = 1,
    name: str = DEFAULT_NAME,
) -> list[dict[str, Any]]:
    """Everything to install the operator (after ``kubectl apply -f crds/``); ``watch_namespaces``
    None means cluster-wide. More than one replica needs ``peering``. The operator runs
    ``operator_image`` (the Dockerfile's slim target) and gives web services ``image`` (--image)."""
    if replicas > 1 and not peering:
        raise ValueError("more than one replica needs peering, or the replicas would all act at once")
    objects: list[dict[str, Any]] = []
    if peering:
        objects += build_peering_crds()
    objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "labels": _labels(name)},
        }
    )
    objects += _rbac(name=name, namespace=namespace, watch_namespaces=watch_namespaces, peering=peering)
    if peering:
        scope = {"kind": "ClusterKopfPeering"} if watch_namespaces is None else {"kind": "KopfPeering"}
        targets = [None] if watch_namespaces is None else list(watch_namespaces)
        for target in targets:
            meta: dict[str, Any] = {"name": name}
            if target is not None:
                meta["namespace"] = target
            objects.append({"apiVersion": "kopf.dev/v1", **scope, "metadata": meta})
    objects.append(
        _deployment(
            name=name,
            namespace=namespace,
            image=image,
            operator_image=operator_image,
            watch_namespaces=watch_namespaces,
            peering=peering,
            replicas=replicas,
        )
    )
    return objects


def render_yaml(objects: Sequence[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, width=110)
