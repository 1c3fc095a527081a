"""The Kubernetes kinds fpgaserve reads and writes, and the one error type of a failed API call.

Role: the shared vocabulary of the operator's client (``fpgaserve.operator.kube``) and the cluster
SDK's (``fpgaserve.sdk.cluster.api``): a ``Kind`` builds a resource's URLs, ``ApiError`` carries a
failed request's status and reason, never an object's content (a Secret cannot leak into a message).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fpgaserve.api.crd_models import API_VERSION, MODEL_KIND, MODEL_PLURAL, WEBSERVICE_KIND, WEBSERVICE_PLURAL

__all__ = [
    "DEPLOYMENT",
    "EVENT",
    "FPGAMODEL",
    "FPGAWEBSERVICE",
    "HPA",
    "INGRESS",
    "MERGE_PATCH",
    "PDB",
    "POD",
    "RESOURCECLAIMTEMPLATE",
    "SECRET",
    "SERVICE",
    "ApiError",
    "Kind",
    "call_api",
    "kind_of",
]

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Kind:
    """A namespaced resource fpgaserve uses: enough to build its URLs."""

    api_version: str
    kind: str
    plural: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        prefix = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        path = f"{prefix}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
SERVICE = Kind("v1", "Service", "services")
SECRET = Kind("v1", "Secret", "secrets")
POD = Kind("v1", "Pod", "pods")  # read only: why a web service's pods do not come up
EVENT = Kind("v1", "Event", "events")  # read only (the SDK shows a web service's Events)
INGRESS = Kind("networking.k8s.io/v1", "Ingress", "ingresses")
HPA = Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
PDB = Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
RESOURCECLAIMTEMPLATE = Kind("resource.k8s.io/v1", "ResourceClaimTemplate", "resourceclaimtemplates")
FPGAMODEL = Kind(API_VERSION, MODEL_KIND, MODEL_PLURAL)
FPGAWEBSERVICE = Kind(API_VERSION, WEBSERVICE_KIND, WEBSERVICE_PLURAL)
_KINDS = {
    (k.api_version, k.kind): k
    for k in (
        DEPLOYMENT,
        SERVICE,
        SECRET,
        INGRESS,
        HPA,
        PDB,
        RESOURCECLAIMTEMPLATE,
        FPGAMODEL,
        FPGAWEBSERVICE,
    )
}


def kind_of(obj: Mapping[str, Any]) -> Kind:
    """The Kind of a built object, from its apiVersion and kind."""
    return _KINDS[(obj["apiVersion"], obj["kind"])]


class ApiError(Exception):
    """A failed API request: the status code, and the reason and message of the API's Status."""

    def __init__(self, *, status: int, reason: str, message: str, what: str) -> None:
        super().__init__(f"{what}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason

    @property
    def transient(self) -> bool:
        """Worth retrying as is: conflicts, throttling, server-side and network trouble."""
        return self.status in (0, 409, 429) or self.status >= 500


def call_api(
    api_client: Any,
    method: str,
    path: str,
    *,
    what: str,
    query: Sequence[tuple[str, str]] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    raw: bool = False,
) -> dict[str, Any]:
    """One blocking request through a ``kubernetes.client.ApiClient`` (its authentication), for the
    operator's ``Kube`` (in a thread) and the SDK's ``SyncKube``: the decoded JSON, or with ``raw``
    ``{"text": ...}`` (pod logs). A failure is an ``ApiError`` with the status and the API's reason,
    never the response's content beyond the Status message."""
    headers = {"Accept": "*/*" if raw else "application/json", "Content-Type": content_type}
    _, url, headers, serialized, _ = api_client.param_serialize(
        method=method, resource_path=path, query_params=query, header_params=headers, body=body,
        auth_settings=["BearerToken"],
    )  # fmt: skip
    try:
        response = api_client.call_api(method, url, header_params=headers, body=serialized)
        response.read()
    except Exception as exc:  # urllib3's connection errors and timeouts
        raise ApiError(status=0, reason=type(exc).__name__, message="no response", what=what) from None
    if raw and 200 <= response.status < 300:
        return {"text": (response.data or b"").decode("utf-8", "replace")}
    try:
        data: Any = json.loads(response.data) if response.data else {}
    except ValueError:
        data = {}
    if not 200 <= response.status < 300:
        status = data if isinstance(data, dict) else {}
        raise ApiError(
            status=response.status, reason=str(status.get("reason") or "Error"),
            message=str(status.get("message") or "")[:400], what=what,
        )  # fmt: skip
    result: dict[str, Any] = data
    return result
