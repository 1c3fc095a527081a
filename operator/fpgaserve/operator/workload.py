"""The Deployment of an FpgaWebservice: ``storage-init`` then ``serve``, exactly per the contract.

Role: a pure builder (no kopf, no client, no I/O) called by ``fpgaserve.operator.reconcile_webservice``. Every
path, port and flag comes from ``fpgaserve.api.serving``; the init container downloads and
verifies the package into an emptyDir the server container reads. Pods run as the image's
non-root user with a read-only root filesystem and no capabilities.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from fpgaserve.api import serving
from fpgaserve.api.constants import ENV_REQUIRE_DEVICE
from fpgaserve.api.crd_models import FpgaModelSpec, FpgaWebserviceSpec, ModelSource
from fpgaserve.api.naming import (
    KEYS_FILENAME,
    TLS_SECRET_CERT,
    TLS_SECRET_KEY,
    keys_secret_name,
    labels,
    object_meta,
    selector_labels,
    source_secret_name,
    tls_secret_name,
)
from fpgaserve.operator.claims import CLAIM_NAME, claim_template_name, uses_dra
from fpgaserve.operator.config import OperatorConfig

__all__ = [
    "GRPC_PORT_NAME",
    "IMAGE_UID",
    "MODEL_DIGEST_ANNOTATION",
    "ResolvedSource",
    "build_deployment",
    "build_source_secret",
    "canonical_quantity",
    "resolve_source",
    "server_port",
]

# The USER of the image (see the Dockerfile); the pod asks for it explicitly so that
# runAsNonRoot can be verified by the kubelet.
IMAGE_UID = 10001
MODEL_DIGEST_ANNOTATION = "fpgaserve.io/model-digest"
SHUTDOWN_TIMEOUT_S = 10  # how long in-flight requests may finish after the drain period
TLS_CERT_FILENAME = str(PurePosixPath(serving.TLS_CERT_FILE).relative_to(serving.TLS_DIR))
TLS_KEY_FILENAME = str(PurePosixPath(serving.TLS_KEY_FILE).relative_to(serving.TLS_DIR))
SECRET_FILE_MODE = 0o440  # owner and fsGroup read

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


@dataclass(frozen=True)
class ResolvedSource:
    """A model source as storage-init sees it: the URI it fetches, and the volume it needs."""

    uri: str
    volume: dict[str, Any] | None = None  # a pvc or hostPath volume, mounted at SOURCE_DIR

    @property
    def secret(self) -> bool:
        """Whether the URI carries a credential (a presigned URL's query) and so goes to
        storage-init through a Secret (``build_source_secret``), not its argv."""
        parts = urlsplit(self.uri)
        return bool(parts.query or parts.fragment)


def build_source_secret(*, owner: Mapping[str, Any], model: FpgaModelSpec) -> dict[str, Any] | None:
    """The Secret that hands storage-init a source URI carrying a credential; None when the URI
    carries none (it then stays readable in the init container's argv)."""
    source = resolve_source(model.source)
    if not source.secret:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(owner=owner, name=source_secret_name(owner["metadata"]["name"])),
        "type": "Opaque",
        "data": {serving.SOURCE_URI_KEY: base64.b64encode(source.uri.encode()).decode()},
    }


def resolve_source(source: ModelSource) -> ResolvedSource:
    """Turn pvc:// and file:// into a volume plus a file:// URI under SOURCE_DIR; raise ValueError
    on a malformed URI (the message never repeats the URI: it might hold a credential)."""
    parts = urlsplit(source.uri)
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URI: put them in a Secret named by source.secretRef")
    if source.scheme == "pvc":
        path = parts.path.lstrip("/")
        if not parts.netloc or not path:
            raise ValueError("expected pvc://CLAIM/PATH/IN/CLAIM")
        volume = {"persistentVolumeClaim": {"claimName": parts.netloc, "readOnly": True}}
        return ResolvedSource(uri=f"file://{serving.SOURCE_DIR}/{path}", volume=volume)
    if source.scheme == "file":
        file = PurePosixPath(parts.path)
        if parts.netloc or not file.is_absolute() or file.name in ("", "..") or str(file) == "/":
            raise ValueError("expected file:///ABSOLUTE/PATH/ON/THE/NODE")
        volume = {"hostPath": {"path": str(file.parent), "type": "Directory"}}
        return ResolvedSource(uri=f"file://{serving.SOURCE_DIR}/{file.name}", volume=volume)
    if source.scheme == "s3" and (not parts.netloc or not parts.path.strip("/")):
        raise ValueError("expected s3://BUCKET/KEY")
    if source.scheme in ("http", "https") and not parts.netloc:
        raise ValueError("expected a host")
    return ResolvedSource(uri=source.uri)


def _source_uri_env(name: str) -> dict[str, Any]:
    secret = {"name": source_secret_name(name), "key": serving.SOURCE_URI_KEY}
    return {"name": serving.SOURCE_URI_ENV, "valueFrom": {"secretKeyRef": secret}}


def canonical_quantity(value: str) -> str:
    """The form the API server stores a quantity in ("0.5" -> "500m", "1.5Gi" -> "1536Mi"), so
    that comparing the live object with the desired one sees no drift where there is none."""
    number, suffix = value, ""
    for candidate in (*_BINARY, *_DECIMAL, "m"):
        if value.endswith(candidate):
            number, suffix = value[: -len(candidate)], candidate
            break
    try:
        amount = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"not a quantity: {value!r}") from None
    if suffix in _BINARY or suffix in _DECIMAL:
        table = _BINARY if suffix in _BINARY else _DECIMAL
        total = amount * table[suffix]
        if total == total.to_integral_value():
            for name, factor in sorted(table.items(), key=lambda item: -item[1]):
                if total % factor == 0:
                    return f"{int(total // factor)}{name}"
            return str(int(total))
        amount, suffix = total, ""
    millis = amount * 1000 if suffix == "" else amount
    if millis != millis.to_integral_value():
        millis = millis.to_integral_value(rounding="ROUND_CEILING")  # the API server rounds up too
    if millis % 1000 == 0:
        return str(int(millis // 1000))
    return f"{int(millis)}m"


# The name of the gRPC port on the container and the Service (TLS or not, like the HTTP port's number).
GRPC_PORT_NAME = "grpc"


def server_port(spec: FpgaWebserviceSpec) -> tuple[str, int]:
    """The server container's port name and number (one port: HTTPS with TLS, else HTTP)."""
    return ("https", serving.HTTPS_PORT) if spec.tls.enabled else ("http", serving.HTTP_PORT)


def _container_ports(spec: FpgaWebserviceSpec) -> list[dict[str, Any]]:
    port_name, port = server_port(spec)
    ports = [{"name": port_name, "containerPort": port, "protocol": "TCP"}]
    if spec.grpc.enabled:
        ports.append({"name": GRPC_PORT_NAME, "containerPort": serving.GRPC_PORT, "protocol": "TCP"})
    return ports


def build_deployment(
    *, owner: Mapping[str, Any], spec: FpgaWebserviceSpec, model: FpgaModelSpec, config: OperatorConfig
) -> dict[str, Any]:
    """The web service's Deployment. Without autoscaling it sets replicas; with it, the
    HorizontalPodAutoscaler owns the replica count and the Deployment leaves it alone."""
    name = owner["metadata"]["name"]
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name)},
        # Never below the wanted capacity during a rollout: a new pod (and its FPGA) comes first.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "revisionHistoryLimit": 3,
        "template": _pod_template(owner=owner, spec=spec, model=model, config=config),
    }
    if spec.autoscale is None:
        deployment_spec = {"replicas": spec.replicas, **deployment_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(owner=owner, name=name),
        "spec": deployment_spec,
    }


def _pod_template(
    *, owner: Mapping[str, Any], spec: FpgaWebserviceSpec, model: FpgaModelSpec, config: OperatorConfig
) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    source = resolve_source(model.source)
    port_name, port = server_port(spec)
    scheme = port_name.upper()
    image = spec.image or config.image
    pull_policy = spec.image_pull_policy or config.image_pull_policy

    volumes: list[dict[str, Any]] = [
        {"name": "model", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},  # the only writable place for the server (numba's cache)
    ]
    init_mounts: list[dict[str, Any]] = [
        {"name": "model", "mountPath": serving.MODEL_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    server_mounts: list[dict[str, Any]] = [
        {"name": "model", "mountPath": serving.MODEL_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if model.source.secret_ref is not None:
        volumes.append(_secret_volume("credentials", model.source.secret_ref.name))
        init_mounts.append({"name": "credentials", "mountPath": serving.CREDENTIALS_DIR, "readOnly": True})
    if source.volume is not None:
        volumes.append({"name": "source", **source.volume})
        init_mounts.append({"name": "source", "mountPath": serving.SOURCE_DIR, "readOnly": True})
    if spec.auth.enabled:
        volumes.append(_secret_volume("keys", keys_secret_name(name), {KEYS_FILENAME: KEYS_FILENAME}))
        server_mounts.append({"name": "keys", "mountPath": serving.KEYS_DIR, "readOnly": True})
    if spec.tls.enabled:
        tls_secret = spec.tls.secret_name or tls_secret_name(name)
        items = {TLS_SECRET_CERT: TLS_CERT_FILENAME, TLS_SECRET_KEY: TLS_KEY_FILENAME}
        volumes.append(_secret_volume("tls", tls_secret, items))
        server_mounts.append({"name": "tls", "mountPath": serving.TLS_DIR, "readOnly": True})

    init = {
        "name": "storage-init",
        "image": image,
        "imagePullPolicy": pull_policy,
        "args": serving.storage_init_argv(
            uri=None if source.secret else source.uri,
            sha256=model.source.sha256,
            dest=serving.MODEL_DIR,
            credentials_dir=serving.CREDENTIALS_DIR if model.source.secret_ref is not None else None,
            endpoint=model.source.endpoint,
            termination_log=serving.TERMINATION_LOG,
        ),
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": _container_security(),
        "volumeMounts": init_mounts,
        **_termination_message(),
    }
    if source.secret:
        init["env"] = [_source_uri_env(name)]
    server: dict[str, Any] = {
        "name": "server",
        "image": image,
        "imagePullPolicy": pull_policy,
        "args": serving.serve_argv(
            model_dir=serving.MODEL_DIR,
            port=port,
            grpc_port=serving.GRPC_PORT if spec.grpc.enabled else None,
            tls=spec.tls.enabled,
            keys=spec.auth.enabled,
            max_batch_size=spec.batching.max_batch_size,
            max_batch_delay_ms=spec.batching.max_batch_delay_ms,
            max_queue=spec.batching.max_queue,
            max_body_bytes=spec.server.max_body_bytes,
            max_image_pixels=spec.server.max_image_pixels,
            request_timeout_s=spec.server.request_timeout_seconds,
            drain_s=spec.server.drain_seconds,
            shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
        ),
        "ports": _container_ports(spec),
        "env": [{"name": ENV_REQUIRE_DEVICE, "value": "1"}] if spec.fpga.count > 0 else [],
        "resources": _server_resources(spec),
        "startupProbe": _probe(serving.LIVENESS_PATH, port_name, scheme, period=5, failures=60),
        "readinessProbe": _probe(serving.READINESS_PATH, port_name, scheme, period=5, failures=3),
        "livenessProbe": _probe(serving.LIVENESS_PATH, port_name, scheme, period=10, failures=3),
        "securityContext": _container_security(),
        "volumeMounts": server_mounts,
        **_termination_message(),
    }
    annotations = {
        MODEL_DIGEST_ANNOTATION: f"sha256:{model.source.sha256}",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": serving.METRICS_PATH,
        "prometheus.io/scheme": port_name,
    }
    pod_spec: dict[str, Any] = {
        # The server never talks to the API server.
        "automountServiceAccountToken": False,
        # On SIGTERM the server stays unready but serving for drainSeconds (instead of a preStop
        # sleep: the endpoints controller and proxies stop sending meanwhile), then in-flight
        # requests get SHUTDOWN_TIMEOUT_S; the kubelet must not kill it before.
        "terminationGracePeriodSeconds": spec.server.drain_seconds + SHUTDOWN_TIMEOUT_S + 5,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "fsGroup": IMAGE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [init],
        "containers": [server],
        "volumes": volumes,
    }
    if uses_dra(spec):
        # DRA mode: each pod gets a ResourceClaim of its own from the template (see claims), and
        # the server container uses it; no extended resource is requested.
        pod_spec["resourceClaims"] = [
            {"name": CLAIM_NAME, "resourceClaimTemplateName": claim_template_name(name)}
        ]
        server["resources"]["claims"] = [{"name": CLAIM_NAME}]
    return {"metadata": {"labels": labels(name), "annotations": annotations}, "spec": pod_spec}


def _secret_volume(volume: str, secret: str, items: Mapping[str, str] | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"secretName": secret, "defaultMode": SECRET_FILE_MODE}
    if items:
        source["items"] = [{"key": key, "path": path} for key, path in items.items()]
    return {"name": volume, "secret": source}


def _termination_message() -> dict[str, Any]:
    """Why a container failed, for the operator's status: what it wrote to the termination log,
    else the tail of its log (the server writes no termination message of its own)."""
    return {
        "terminationMessagePath": serving.TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _probe(path: str, port: str, scheme: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port, "scheme": scheme},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _server_resources(spec: FpgaWebserviceSpec) -> dict[str, Any]:
    res = spec.resources
    requests = {"cpu": canonical_quantity(res.cpu), "memory": canonical_quantity(res.memory)}
    limits = {"memory": canonical_quantity(res.memory_limit or res.memory)}
    if res.cpu_limit is not None:
        limits["cpu"] = canonical_quantity(res.cpu_limit)
    if spec.fpga.count > 0 and spec.fpga.mode == "DevicePlugin":
        # Extended resources are whole devices, never overcommitted: requests == limits.
        requests[spec.fpga.resource_name] = str(spec.fpga.count)
        limits[spec.fpga.resource_name] = str(spec.fpga.count)
    return {"requests": requests, "limits": limits}
