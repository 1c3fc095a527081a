"""The one small wrapper through which the operator talks to the Kubernetes API.

Role: everything the reconcilers (``fpgaserve.operator.reconcile_webservice``) read or write goes through
``Kube``: get, list, create, merge-patch, delete, and ``apply`` (create when absent, patch only when
the live object differs from the desired one, so that a resync or a restart writes nothing). It is
a thin layer over the ``kubernetes`` client's ``ApiClient`` (which brings in-cluster and kubeconfig
authentication); its blocking calls run in a small thread pool. Errors carry the API's status code
and reason, never an object's content, so that a Secret cannot leak into a log or an event.
"""

from __future__ import annotations

import asyncio
import copy
import enum
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes.client import ApiClient

from fpgaserve.api.kinds import MERGE_PATCH, ApiError, Kind, call_api, kind_of

__all__ = [
    "Change",
    "Kube",
    "NotOwnedError",
    "is_subset",
    "owned_by",
    "with_managed_annotations",
]


class NotOwnedError(Exception):
    """An object the operator would write exists and belongs to someone else: it is left alone."""

    def __init__(self, kind: Kind, name: str) -> None:
        super().__init__(f"{kind.kind} {name} exists and is not owned by this object; rename or delete it")
        self.kind = kind
        self.name = name


# Lists the annotation keys fpgaserve set on an object (see with_managed_annotations).
MANAGED_ANNOTATIONS = "fpgaserve.io/managed-annotations"


class Change(enum.Enum):
    """What ``Kube.apply`` did."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def is_subset(desired: Any, live: Any) -> bool:
    """Whether every field of ``desired`` is in ``live`` with the same value.

    Fields the API server or other controllers add (defaults, status, clusterIP) do not count as
    drift; lists compare element by element and must have the same length.
    """
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            k in live and is_subset(v, live[k]) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(is_subset(d, v) for d, v in zip(desired, live, strict=True))
        )
    return bool(desired == live)


def with_managed_annotations(desired: Mapping[str, Any]) -> dict[str, Any]:
    """``desired`` plus an annotation listing the annotation keys the operator sets, so that a key
    dropped from the spec later (e.g. from ``ingress.annotations``) can be removed from the object."""
    out = copy.deepcopy(dict(desired))
    annotations = out["metadata"].setdefault("annotations", {})
    annotations[MANAGED_ANNOTATIONS] = ",".join(sorted(k for k in annotations if k != MANAGED_ANNOTATIONS))
    return out


def removed_annotations(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Annotation keys the operator set before (per ``live``) that ``desired`` no longer has."""
    live_annotations = (live.get("metadata") or {}).get("annotations") or {}
    managed_before = {k for k in live_annotations.get(MANAGED_ANNOTATIONS, "").split(",") if k}
    wanted = set((desired.get("metadata") or {}).get("annotations") or {})
    return sorted(k for k in managed_before - wanted if k in live_annotations)


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    """Whether ``obj`` has an ownerReference to the object with this uid."""
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences") or [])


class Kube:
    """Async access to the Kubernetes API for the operator's reconcilers."""

    def __init__(self, *, api_client: ApiClient, max_workers: int = 8) -> None:
        self._api = api_client
        # The client blocks; a pool of its own keeps it from starving kopf's default executor.
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fpgaserve-kube")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._api.close()  # type: ignore[no-untyped-call]

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self._request("GET", kind.path(namespace, name), what=f"get {kind.kind} {name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self, kind: Kind, namespace: str, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        body = await self._request("GET", kind.path(namespace), query=query, what=f"list {kind.plural}")
        items: list[dict[str, Any]] = body.get("items") or []
        return items

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        kind, namespace, name = kind_of(obj), obj["metadata"]["namespace"], obj["metadata"]["name"]
        return await self._request("POST", kind.path(namespace), body=obj, what=f"create {kind.kind} {name}")

    async def patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386): dicts merge, lists are replaced, None removes a key."""
        return await self._request(
            "PATCH",
            kind.path(namespace, name, subresource),
            body=patch,
            content_type=MERGE_PATCH,
            what=f"patch {kind.kind} {name}",
        )

    async def delete(self, kind: Kind, namespace: str, name: str, *, uid: str | None = None) -> bool:
        """Delete (in the background, dependents cascade); False when already gone. With ``uid``, only
        that incarnation of the object is deleted."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        try:
            await self._request(
                "DELETE", kind.path(namespace, name), body=body, what=f"delete {kind.kind} {name}"
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def apply(
        self, desired: Mapping[str, Any], *, owner_uid: str | None = None
    ) -> tuple[dict[str, Any], Change]:
        """Make the object match ``desired``: create it, or merge-patch it when it has drifted. With
        ``owner_uid``, an existing object must be owned by that object (else NotOwnedError)."""
        desired = with_managed_annotations(desired)
        kind, meta = kind_of(desired), desired["metadata"]
        live = await self.get(kind, meta["namespace"], meta["name"])
        if live is None:
            try:
                return await self.create(desired), Change.CREATED
            except ApiError as exc:
                if exc.status != 409:
                    raise
                # Created concurrently (a resync racing a change handler): compare with that one.
                live = await self.get(kind, meta["namespace"], meta["name"])
                if live is None:
                    raise
        if owner_uid is not None and not owned_by(live, owner_uid):
            raise NotOwnedError(kind, meta["name"])
        removed = removed_annotations(desired, live)
        if is_subset(desired, live) and not removed:
            return live, Change.UNCHANGED
        patch = copy.deepcopy(dict(desired))
        if removed:  # a merge patch keeps keys it does not mention: null removes them
            patch["metadata"].setdefault("annotations", {}).update(dict.fromkeys(removed))
        return await self.patch(kind, meta["namespace"], meta["name"], patch), Change.UPDATED

    async def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        query_params = list(query.items()) if query else None
        return await loop.run_in_executor(
            self._executor, self._call, method, path, query_params, body, content_type, what
        )

    def _call(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]] | None,
        body: Any,
        content_type: str,
        what: str,
    ) -> dict[str, Any]:
        return call_api(self._api, method, path, what=what, query=query, body=body, content_type=content_type)
