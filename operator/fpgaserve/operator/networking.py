"""The Service, Ingress, HorizontalPodAutoscaler and PodDisruptionBudget of an FpgaWebservice.

Role: pure builders (no kopf, no client, no I/O) called by ``fpgaserve.operator.reconcile_webservice``, next
to ``workload.build_deployment``. Each returns None when the spec does not ask for the object, so
that the reconciler deletes one left over from an earlier spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fpgaserve.api.crd_models import FpgaWebserviceSpec
from fpgaserve.operator.naming import ingress_tls_secret_name, object_meta, selector_labels
from fpgaserve.operator.workload import server_port

__all__ = [
    "BACKEND_PROTOCOL_ANNOTATION",
    "build_hpa",
    "build_ingress",
    "build_pdb",
    "build_service",
    "external_url",
    "internal_url",
    "service_port",
]

# Tells ingress-nginx to speak HTTPS to a server with TLS (other controllers ignore it).
BACKEND_PROTOCOL_ANNOTATION = "nginx.ingress.kubernetes.io/backend-protocol"


def service_port(spec: FpgaWebserviceSpec) -> tuple[str, int]:
    """The Service's port: 443 named https with TLS, else 80 named http."""
    return ("https", 443) if spec.tls.enabled else ("http", 80)


def build_service(*, owner: Mapping[str, Any], spec: FpgaWebserviceSpec) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    port_name, port = service_port(spec)
    target_name, _ = server_port(spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(owner=owner, name=name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name),
            "ports": [{"name": port_name, "port": port, "targetPort": target_name, "protocol": "TCP"}],
        },
    }


def build_ingress(*, owner: Mapping[str, Any], spec: FpgaWebserviceSpec) -> dict[str, Any] | None:
    ingress = spec.ingress
    if ingress is None:
        return None
    name = owner["metadata"]["name"]
    annotations = dict(ingress.annotations)
    if spec.tls.enabled:
        annotations.setdefault(BACKEND_PROTOCOL_ANNOTATION, "HTTPS")
    if ingress.tls is not None and ingress.tls.cluster_issuer is not None:
        annotations["cert-manager.io/cluster-issuer"] = ingress.tls.cluster_issuer
    if ingress.tls is not None and ingress.tls.issuer is not None:
        annotations["cert-manager.io/issuer"] = ingress.tls.issuer
    port_name, _ = service_port(spec)
    ingress_spec: dict[str, Any] = {}
    if ingress.class_name is not None:
        ingress_spec["ingressClassName"] = ingress.class_name
    ingress_spec["rules"] = [
        {
            "host": ingress.host,
            "http": {
                "paths": [
                    {
                        "path": ingress.path,
                        "pathType": "Prefix",
                        "backend": {"service": {"name": name, "port": {"name": port_name}}},
                    }
                ]
            },
        }
    ]
    if ingress.tls is not None:
        secret = ingress.tls.secret_name or ingress_tls_secret_name(name)
        ingress_spec["tls"] = [{"hosts": [ingress.host], "secretName": secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": object_meta(owner=owner, name=name, annotations=annotations),
        "spec": ingress_spec,
    }


def build_hpa(*, owner: Mapping[str, Any], spec: FpgaWebserviceSpec) -> dict[str, Any] | None:
    autoscale = spec.autoscale
    if autoscale is None:
        return None
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(owner=owner, name=name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": autoscale.min_replicas,
            "maxReplicas": autoscale.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": autoscale.target_utilization},
                    },
                }
            ],
        },
    }


def build_pdb(*, owner: Mapping[str, Any], spec: FpgaWebserviceSpec) -> dict[str, Any] | None:
    """A budget of one voluntary disruption at a time, when there is more than one replica."""
    if spec.min_replicas <= 1:
        return None
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(owner=owner, name=name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(name)}},
    }


def external_url(spec: FpgaWebserviceSpec) -> str | None:
    """The URL through the Ingress, when there is one."""
    ingress = spec.ingress
    if ingress is None:
        return None
    scheme = "https" if ingress.tls is not None else "http"
    return f"{scheme}://{ingress.host}{ingress.path}"


def internal_url(*, name: str, namespace: str, spec: FpgaWebserviceSpec, cluster_domain: str) -> str:
    """The URL through the Service, from inside the cluster (on the scheme's default port)."""
    scheme, _ = service_port(spec)
    return f"{scheme}://{name}.{namespace}.svc.{cluster_domain}/"
