"""The Service, Ingress, HorizontalPodAutoscaler and PodDisruptionBudget of an FpgaWebservice.

Role: pure builders (no kopf, no client, no I/O) called by ``fpgaserve.operator.reconcile_webservice``, next
to ``workload.build_deployment``. Each returns None when the spec does not ask for the object, so
that the reconciler deletes one left over from an earlier spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fpgaserve.api import serving
from fpgaserve.api.crd_models import FpgaWebserviceSpec
from fpgaserve.api.naming import grpc_ingress_name, ingress_tls_secret_name, object_meta, selector_labels
from fpgaserve.operator.workload import GRPC_PORT_NAME, server_port

__all__ = [
    "BACKEND_PROTOCOL_ANNOTATION",
    "build_grpc_ingress",
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
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(owner=owner, name=name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name),
            "ports": _service_ports(spec),
        },
    }


def _service_ports(spec: FpgaWebserviceSpec) -> list[dict[str, Any]]:
    port_name, port = service_port(spec)
    target_name, _ = server_port(spec)
    ports: list[dict[str, Any]] = [
        {"name": port_name, "port": port, "targetPort": target_name, "protocol": "TCP"}
    ]
    if spec.grpc.enabled:
        ports.append(
            {
                "name": GRPC_PORT_NAME,
                "port": serving.GRPC_PORT,
                "targetPort": GRPC_PORT_NAME,
                "protocol": "TCP",
            }
        )
    return ports


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


def build_grpc_ingress(*, owner: Mapping[str, Any], spec: FpgaWebserviceSpec) -> dict[str, Any] | None:
    """The Ingress of the gRPC port (``<name>-grpc``), when ``spec.ingress.grpc`` asks for one.

    An object of its own because ingress-nginx's backend protocol annotation applies to a whole
    Ingress: on the HTTP Ingress's host it routes only the gRPC services' paths, so both share a
    host and its certificate; on a host of its own it routes everything.
    """
    ingress = spec.ingress
    if ingress is None or ingress.grpc is None or not spec.grpc.enabled:
        return None
    name = owner["metadata"]["name"]
    annotations = {BACKEND_PROTOCOL_ANNOTATION: "GRPCS" if spec.tls.enabled else "GRPC"}
    annotations.update(ingress.grpc.annotations)
    if ingress.tls is not None and ingress.tls.cluster_issuer is not None:
        annotations["cert-manager.io/cluster-issuer"] = ingress.tls.cluster_issuer
    if ingress.tls is not None and ingress.tls.issuer is not None:
        annotations["cert-manager.io/issuer"] = ingress.tls.issuer
    backend = {"service": {"name": name, "port": {"name": GRPC_PORT_NAME}}}
    host = ingress.grpc.host or ingress.host
    prefixes = ["/"] if ingress.grpc.host is not None else [f"/{s}" for s in serving.GRPC_SERVICES]
    ingress_spec: dict[str, Any] = {}
    if ingress.class_name is not None:
        ingress_spec["ingressClassName"] = ingress.class_name
    paths = [{"path": path, "pathType": "Prefix", "backend": backend} for path in prefixes]
    ingress_spec["rules"] = [{"host": host, "http": {"paths": paths}}]
    if ingress.tls is not None:
        # A host of its own needs a certificate of its own; the shared host shares the HTTP one.
        secret = ingress.tls.secret_name or ingress_tls_secret_name(name)
        if ingress.grpc.host is not None:
            secret = (
                f"{secret}-grpc"
                if ingress.tls.secret_name
                else ingress_tls_secret_name(grpc_ingress_name(name))
            )
        ingress_spec["tls"] = [{"hosts": [host], "secretName": secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": object_meta(owner=owner, name=grpc_ingress_name(name), annotations=annotations),
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
