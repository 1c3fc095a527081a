"""The driver's few calls to the Kubernetes API: its node's ResourceSlice, and the claims it prepares.

Role: used by ``fpgaserve.dra.publisher`` (slices) and ``fpgaserve.dra.prepare`` (claims). A thin,
blocking layer over the ``kubernetes`` client's ``ApiClient`` (in-cluster or kubeconfig
authentication); errors carry the status code and the API's reason, never an object's content.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes.client import ApiClient

__all__ = ["KubeApi", "KubeApiError", "claim_path", "slice_path"]

MERGE_PATCH = "application/merge-patch+json"


class KubeApiError(Exception):
    def __init__(self, *, status: int, reason: str, what: str) -> None:
        super().__init__(f"{what}: {status} {reason}")
        self.status = status
        self.reason = reason


def slice_path(name: str | None = None) -> str:
    return "/apis/resource.k8s.io/v1/resourceslices" + (f"/{name}" if name else "")


def claim_path(namespace: str, name: str) -> str:
    return f"/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{name}"


class KubeApi:
    """GET, POST and merge-PATCH of JSON objects; ``get`` returns None for 404."""

    def __init__(self, api_client: ApiClient) -> None:
        self._api = api_client

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    def get(self, path: str, *, what: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path, what=what)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, path: str, body: Mapping[str, Any], *, what: str) -> dict[str, Any]:
        return self.request("POST", path, body=body, what=what)

    def patch(self, path: str, body: Mapping[str, Any], *, what: str) -> dict[str, Any]:
        return self.request("PATCH", path, body=body, content_type=MERGE_PATCH, what=what)

    def request(
        self, method: str, path: str, *, what: str, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, headers, serialized, _ = self._api.param_serialize(
            method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        try:
            response = self._api.call_api(method, url, header_params=headers, body=serialized)
            response.read()  # type: ignore[no-untyped-call]
        except Exception as exc:  # urllib3's connection errors and timeouts
            raise KubeApiError(status=0, reason=type(exc).__name__, what=what) from None
        data: Any = json.loads(response.data) if response.data else {}
        if not 200 <= response.status < 300:
            reason = str(data.get("reason") or "Error") if isinstance(data, dict) else "Error"
            raise KubeApiError(status=response.status, reason=reason, what=what)
        result: dict[str, Any] = data
        return result
