"""Names, labels and owner references of the objects an FpgaWebservice owns.

Role: the small vocabulary every builder (``workload``, ``networking``, ``secrets``) shares, so
that the Deployment's selector, the Service's selector and the disruption budget's selector can
never disagree, and every owned object points back at its FpgaWebservice.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from fpgaserve.api import serving

__all__ = [
    "KEYS_FILENAME",
    "MANAGED_BY",
    "TLS_SECRET_CERT",
    "TLS_SECRET_KEY",
    "WEBSERVICE_LABEL",
    "grpc_ingress_name",
    "ingress_tls_secret_name",
    "keys_secret_name",
    "labels",
    "object_meta",
    "owner_reference",
    "selector_labels",
    "source_secret_name",
    "tls_secret_name",
]

MANAGED_BY = "fpgaserve-operator"
WEBSERVICE_LABEL = "fpgaserve.io/webservice"
# The data key of the keys Secret (mounted as the server's keys file), and those of a kubernetes.io/tls Secret.
KEYS_FILENAME = str(PurePosixPath(serving.KEYS_FILE).relative_to(serving.KEYS_DIR))
TLS_SECRET_CERT, TLS_SECRET_KEY = "tls.crt", "tls.key"


def selector_labels(name: str) -> dict[str, str]:
    """The labels that select a web service's pods (immutable in a Deployment: keep them few)."""
    return {WEBSERVICE_LABEL: name}


def labels(name: str) -> dict[str, str]:
    """The labels of every object a web service owns."""
    return {
        "app.kubernetes.io/name": "fpgaserve",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(name),
    }


def keys_secret_name(name: str) -> str:
    return f"{name}-keys"


def source_secret_name(name: str) -> str:
    """The Secret holding a source URI that carries a credential (a presigned URL's query)."""
    return f"{name}-source"


def tls_secret_name(name: str) -> str:
    return f"{name}-tls"


def ingress_tls_secret_name(name: str) -> str:
    return f"{name}-ingress-tls"


def grpc_ingress_name(name: str) -> str:
    """The Ingress of the gRPC port: its own object, as its backend protocol differs from HTTP's."""
    return f"{name}-grpc"


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A controller reference to ``owner`` (a whole object: apiVersion, kind, metadata)."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        # Foreground deletion of the owner waits for this object to go first.
        "blockOwnerDeletion": True,
    }


def object_meta(
    *, owner: Mapping[str, Any], name: str, annotations: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Metadata of an object owned by ``owner``, in its namespace, with the standard labels."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": labels(owner["metadata"]["name"]),
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    meta["ownerReferences"] = [owner_reference(owner)]
    return meta
