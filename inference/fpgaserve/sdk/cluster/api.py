"""Blocking calls to the Kubernetes API for the SDK (a notebook has no event loop to lend).

Role: the one way ``Workspace``, ``Model`` and ``Webservice`` read and write objects. It shares
``Kind`` and ``ApiError`` (``fpgaserve.api.kinds``) with the operator's client, so both halves speak
of objects the same way; errors carry the status and the API's reason, never an object's content
(Secrets stay out of messages).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

from kubernetes.client import ApiClient

from fpgaserve.api.kinds import MERGE_PATCH, POD, ApiError, Kind, call_api

__all__ = ["ApiError", "SyncKube"]


class SyncKube:
    """get, list, create, merge-patch, delete and pod logs, blocking."""

    def __init__(self, api_client: ApiClient) -> None:
        self.api_client = api_client

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._call("GET", kind.path(namespace, name), what=f"get {kind.kind} {name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, kind: Kind, namespace: str, *, label_selector: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else None
        items: builtins.list[dict[str, Any]] = (
            self._call("GET", kind.path(namespace), query=query, what=f"list {kind.plural}").get("items")
            or []
        )
        return items

    def create(self, kind: Kind, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self._call("POST", kind.path(namespace), body=body, what=f"create {kind.kind} {name}")

    def patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return self._call(
            "PATCH", kind.path(namespace, name, subresource), body=patch, content_type=MERGE_PATCH,
            what=f"patch {kind.kind} {name}",
        )  # fmt: skip

    def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            self._call("DELETE", kind.path(namespace, name), body=body, what=f"delete {kind.kind} {name}")
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def pod_log(self, namespace: str, pod: str, *, container: str, tail_lines: int) -> str:
        """The last lines of a container's log ("" when the API serves none)."""
        query = [("container", container), ("tailLines", str(tail_lines))]
        try:
            text = self._call(
                "GET",
                POD.path(namespace, pod, "log"),
                query=query,
                what=f"log of {pod}/{container}",
                raw=True,
            )
        except ApiError:
            return ""
        return str(text.get("text", ""))

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query: builtins.list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        raw: bool = False,
    ) -> dict[str, Any]:
        return call_api(
            self.api_client,
            method,
            path,
            what=what,
            query=query,
            body=body,
            content_type=content_type,
            raw=raw,
        )
