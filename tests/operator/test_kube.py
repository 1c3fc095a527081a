"""The Kube wrapper against kmock's emulator: reads, writes, and apply that writes only drift."""

from __future__ import annotations

from typing import Any

import pytest

from fpgaserve.api.kinds import DEPLOYMENT, SERVICE, ApiError
from fpgaserve.operator.kube import Change, Kube, NotOwnedError, is_subset
from tests.operator.cluster import Cluster
from tests.operator.helpers import NAMESPACE


def service(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc", "namespace": NAMESPACE, "ownerReferences": [{"uid": "u1"}]},
        "spec": {"selector": {"app": "a"}, "ports": [{"name": "http", "port": 80}], **spec},
    }


def writes(cluster: Cluster) -> list[str]:
    return [
        f"{r.method.value} {r.url.path}" for r in cluster if r.method.value in ("POST", "PATCH", "DELETE")
    ]


def test_is_subset() -> None:
    assert is_subset({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}, "d": 3})
    assert not is_subset({"a": {"b": 1}}, {"a": {"b": 2}})
    assert is_subset({"l": [{"x": 1}]}, {"l": [{"x": 1, "y": 2}]})
    assert not is_subset({"l": [{"x": 1}]}, {"l": [{"x": 1}, {"x": 2}]})  # an extra element is drift
    assert not is_subset({"a": 1}, {})


async def test_get_create_list_patch_delete(cluster: Cluster, kube: Kube) -> None:
    assert await kube.get(SERVICE, NAMESPACE, "svc") is None
    created = await kube.create(service())
    assert created["metadata"]["uid"]
    assert (await kube.get(SERVICE, NAMESPACE, "svc"))["spec"]["selector"] == {"app": "a"}  # type: ignore[index]
    assert [s["metadata"]["name"] for s in await kube.list(SERVICE, NAMESPACE)] == ["svc"]
    patched = await kube.patch(SERVICE, NAMESPACE, "svc", {"metadata": {"labels": {"x": "y"}}})
    assert patched["metadata"]["labels"] == {"x": "y"}
    assert await kube.delete(SERVICE, NAMESPACE, "svc") is True
    assert await kube.delete(SERVICE, NAMESPACE, "svc") is False
    assert await kube.get(SERVICE, NAMESPACE, "svc") is None


async def test_apply_writes_only_drift(cluster: Cluster, kube: Kube) -> None:
    _, change = await kube.apply(service(), owner_uid="u1")
    assert change is Change.CREATED
    before = len(writes(cluster))
    _, change = await kube.apply(service(), owner_uid="u1")
    assert change is Change.UNCHANGED and len(writes(cluster)) == before  # nothing written
    live, change = await kube.apply(service(selector={"app": "b"}), owner_uid="u1")
    assert change is Change.UPDATED and live["spec"]["selector"] == {"app": "b"}
    assert writes(cluster)[-1] == f"PATCH /api/v1/namespaces/{NAMESPACE}/services/svc"


async def test_apply_leaves_foreign_objects_alone(cluster: Cluster, kube: Kube) -> None:
    await kube.create(service())
    with pytest.raises(NotOwnedError, match="Service svc exists and is not owned"):
        await kube.apply(service(selector={"app": "mine"}), owner_uid="someone-else")
    assert cluster.live("v1/services", NAMESPACE, "svc")["spec"]["selector"] == {"app": "a"}  # type: ignore[index]


async def test_errors_carry_status_and_reason(cluster: Cluster, kube: Kube) -> None:
    await kube.create(service())
    with pytest.raises(ApiError) as info:
        await kube.create(service())
    assert info.value.status == 409 and info.value.transient
    with pytest.raises(ApiError) as missing:
        await kube.patch(DEPLOYMENT, NAMESPACE, "absent", {"spec": {}})
    assert missing.value.status == 404 and not missing.value.transient


async def test_unreachable_api_is_a_transient_error(kube: Kube) -> None:
    from kubernetes.client import ApiClient, Configuration

    dead = Kube(api_client=ApiClient(Configuration(host="http://127.0.0.1:9")))
    try:
        with pytest.raises(ApiError) as info:
            await dead.get(SERVICE, NAMESPACE, "svc")
        assert info.value.status == 0 and info.value.transient
    finally:
        dead.close()


async def test_apply_removes_annotations_dropped_from_the_desired_object(
    cluster: Cluster, kube: Kube
) -> None:
    first = service()
    first["metadata"]["annotations"] = {"a": "1", "b": "2"}
    await kube.apply(first, owner_uid="u1")
    await kube.patch(SERVICE, NAMESPACE, "svc", {"metadata": {"annotations": {"someone-else": "x"}}})
    second = service()
    second["metadata"]["annotations"] = {"a": "1"}
    live, change = await kube.apply(second, owner_uid="u1")
    assert change is Change.UPDATED
    annotations = live["metadata"]["annotations"]
    assert "b" not in annotations  # ours, dropped from the spec: removed
    assert annotations["a"] == "1" and annotations["someone-else"] == "x"  # theirs: kept
    _, change = await kube.apply(second, owner_uid="u1")
    assert change is Change.UNCHANGED
