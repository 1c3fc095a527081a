"""The DRA driver against a fake kubelet (real registration and DRA v1 gRPC over unix sockets) and
kmock's Kubernetes emulator: registration, the node's ResourceSlice, prepare, unprepare, restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from fpgaserve.api.constants import DEVICE_MOUNT_ROOT, DRA_DRIVER_NAME, ENV_DEVICE_IDS, ENV_DEVICE_MODEL
from fpgaserve.dra.cdi import CDI_KIND, spec_path
from fpgaserve.dra.slices import slice_name
from fpgaserve.dra.v1 import api_pb2
from tests.operator.cluster import Cluster
from tests.support.polling import eventually

from .conftest import NAMESPACE, NODE, FakeKubelet, RunningDriver, claim_body, create_claim

SLICES = "resource.k8s.io/v1/resourceslices"
SLICE = slice_name(node_name=NODE, driver=DRA_DRIVER_NAME)


def _claim(obj: dict[str, Any]) -> api_pb2.Claim:
    meta = obj["metadata"]
    return api_pb2.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


async def _prepare(stub: Any, *claims: api_pb2.Claim) -> Any:
    request = api_pb2.NodePrepareResourcesRequest(claims=list(claims))
    return await asyncio.to_thread(stub.NodePrepareResources, request, timeout=10)


async def _unprepare(stub: Any, *claims: api_pb2.Claim) -> Any:
    request = api_pb2.NodeUnprepareResourcesRequest(claims=list(claims))
    return await asyncio.to_thread(stub.NodeUnprepareResources, request, timeout=10)


async def _slice_devices(cluster: Cluster, expected: list[str]) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        live = cluster.live(SLICES, None, SLICE)
        if live is not None and [d["name"] for d in live["spec"]["devices"]] == expected:
            return live
        return None

    found: dict[str, Any] = await eventually(probe, what=f"a ResourceSlice listing {expected}")
    return found


async def test_registers_with_the_kubelet_and_publishes_a_valid_slice(
    cluster: Cluster, kubelet: FakeKubelet, start_driver: Callable[..., RunningDriver]
) -> None:
    driver = start_driver(count=2, model="pbs-s10")
    await asyncio.to_thread(kubelet.register)
    (info,) = kubelet.infos
    assert (info.type, info.name, list(info.supported_versions)) == (
        "DRAPlugin",
        DRA_DRIVER_NAME,
        ["v1.DRAPlugin"],
    )
    assert info.endpoint == str(driver.server.dra_socket)
    assert driver.server.registration.registered.is_set()

    live = await _slice_devices(cluster, driver.ids)
    spec = live["spec"]
    assert (spec["driver"], spec["nodeName"]) == (DRA_DRIVER_NAME, NODE)
    assert spec["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    device = spec["devices"][0]
    assert device["attributes"]["model"] == {"string": "pbs-s10"}
    assert device["attributes"]["matrixUnits"] == {"int": 6}
    assert device["attributes"]["clockMHz"] == {"int": 300}
    assert "int12-bfp" in device["attributes"]["formats"]["string"].split(",")
    assert device["capacity"] == {"weightMemory": {"value": "64Mi"}}
    # The object as the API server would store it, against the official schema (1.34: DRA's v1).
    body = {k: v for k, v in live.items() if k != "metadata"}
    body["metadata"] = {"name": live["metadata"]["name"]}
    for version in ("1.34", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(body, version, strict=True)


async def test_prepare_writes_a_cdi_spec_and_unprepare_removes_it(
    dirs: Path, cluster: Cluster, kubelet: FakeKubelet, start_driver: Callable[..., RunningDriver]
) -> None:
    driver = start_driver(count=2)
    stub = await asyncio.to_thread(kubelet.register)
    device = driver.ids[1]
    claim = await create_claim(cluster, claim_body(name="c1", devices=[device]))
    uid = claim["metadata"]["uid"]

    response = await _prepare(stub, _claim(claim))
    (answer,) = response.claims[uid].devices
    assert response.claims[uid].error == ""
    assert (list(answer.request_names), answer.pool_name, answer.device_name) == (["fpga"], NODE, device)
    (cdi_id,) = answer.cdi_device_ids
    assert cdi_id == f"{CDI_KIND}={uid}-{device}"

    path = spec_path(cdi_dir=dirs / "cdi", claim_uid=uid)
    spec = json.loads(path.read_text())
    assert spec["kind"] == CDI_KIND and f"{CDI_KIND}={spec['devices'][0]['name']}" == cdi_id
    assert f"{ENV_DEVICE_IDS}={device}" in spec["containerEdits"]["env"]
    assert f"{ENV_DEVICE_MODEL}=pbs-tiny" in spec["containerEdits"]["env"]
    (mount,) = spec["devices"][0]["containerEdits"]["mounts"]
    assert mount == {
        "hostPath": f"/host/state/{device}",
        "containerPath": f"{DEVICE_MOUNT_ROOT}/{device}",
        "options": ["ro", "bind"],
    }

    again = await _prepare(stub, _claim(claim))  # idempotent: the same answer, one spec
    assert again == response
    assert sorted(p.name for p in (dirs / "cdi").iterdir()) == [path.name]

    unprepared = await _unprepare(stub, _claim(claim))
    assert list(unprepared.claims) == [uid] and unprepared.claims[uid].error == ""
    assert not path.exists() and driver.preparer.prepared() == {}
    again_unprepared = await _unprepare(stub, _claim(claim))
    assert again_unprepared.claims[uid].error == ""


async def test_every_claim_of_a_batch_gets_its_own_answer(
    cluster: Cluster, kubelet: FakeKubelet, start_driver: Callable[..., RunningDriver]
) -> None:
    driver = start_driver(count=2)
    stub = await asyncio.to_thread(kubelet.register)
    good = await create_claim(cluster, claim_body(name="good", devices=[driver.ids[0]]))
    unknown = await create_claim(cluster, claim_body(name="unknown", devices=["fpga-00000000-9"]))
    foreign = await create_claim(cluster, claim_body(name="foreign", devices=[driver.ids[1]], pool="node-b"))
    other = await create_claim(cluster, claim_body(name="other", devices=["gpu-0"], driver="gpu.example.com"))
    missing = api_pb2.Claim(namespace=NAMESPACE, name="missing", uid="uid-missing")
    replaced = api_pb2.Claim(namespace=NAMESPACE, name="good", uid="uid-of-an-older-good")

    response = await _prepare(stub, *(_claim(c) for c in (good, unknown, foreign, other)), missing, replaced)
    errors = {uid: entry.error for uid, entry in response.claims.items()}
    assert len(errors) == 6
    assert errors[good["metadata"]["uid"]] == ""
    assert len(response.claims[good["metadata"]["uid"]].devices) == 1
    assert "unknown device(s) fpga-00000000-9" in errors[unknown["metadata"]["uid"]]
    assert "pool(s) node-b" in errors[foreign["metadata"]["uid"]]
    assert f"no devices of {DRA_DRIVER_NAME}" in errors[other["metadata"]["uid"]]
    assert "not found" in errors["uid-missing"]
    assert "was replaced" in errors["uid-of-an-older-good"]
    assert list(driver.preparer.prepared()) == [good["metadata"]["uid"]]


async def test_a_restart_neither_loses_nor_duplicates_a_prepared_claim(
    dirs: Path, cluster: Cluster, kubelet: FakeKubelet, start_driver: Callable[..., RunningDriver]
) -> None:
    first = start_driver(count=2)
    stub = await asyncio.to_thread(kubelet.register)
    claim = await create_claim(cluster, claim_body(name="c1", devices=first.ids))
    uid = claim["metadata"]["uid"]
    prepared = await _prepare(stub, _claim(claim))
    path = spec_path(cdi_dir=dirs / "cdi", claim_uid=uid)
    spec = path.read_text()
    first.shutdown()
    assert not (dirs / "registry").exists() or not any((dirs / "registry").iterdir())

    # After the restart the claim is answered from the checkpoint: even with the claim gone from
    # the API and the CDI spec lost with a tmpfs, the same devices, and the same spec again.
    await cluster.delete(f"/apis/resource.k8s.io/v1/namespaces/{NAMESPACE}/resourceclaims/c1")
    path.unlink()
    second = start_driver(count=2)
    stub = await asyncio.to_thread(kubelet.register)
    assert await _prepare(stub, _claim(claim)) == prepared
    assert path.read_text() == spec
    assert list(second.preparer.prepared()) == [uid]

    await _unprepare(stub, _claim(claim))
    assert not path.exists()
    second.shutdown()
    third = start_driver(count=2)
    assert third.preparer.prepared() == {}


async def test_an_unhealthy_device_leaves_the_slice_and_cannot_be_prepared(
    cluster: Cluster, kubelet: FakeKubelet, start_driver: Callable[..., RunningDriver]
) -> None:
    driver = start_driver(count=2)
    stub = await asyncio.to_thread(kubelet.register)
    a, b = driver.ids
    await _slice_devices(cluster, [a, b])

    driver.store.set_health(b, healthy=False, reason="drill")
    live = await _slice_devices(cluster, [a])
    assert live["spec"]["pool"]["generation"] == 2
    claim = await create_claim(cluster, claim_body(name="late", devices=[b]))
    response = await _prepare(stub, _claim(claim))
    assert "unhealthy" in response.claims[claim["metadata"]["uid"]].error

    driver.store.set_health(b, healthy=True)
    live = await _slice_devices(cluster, [a, b])
    assert live["spec"]["pool"]["generation"] == 3


async def test_a_deleted_socket_is_served_again(
    dirs: Path, kubelet: FakeKubelet, start_driver: Callable[..., RunningDriver]
) -> None:
    driver = start_driver(count=1)
    await asyncio.to_thread(kubelet.register)
    driver.server.registration_socket.unlink()
    await asyncio.to_thread(kubelet.register)
    assert len(kubelet.infos) == 2


@pytest.mark.parametrize("field", ["uid", "name"])
async def test_a_claim_without_its_identity_is_refused(
    field: str, kubelet: FakeKubelet, start_driver: Callable[..., RunningDriver]
) -> None:
    start_driver(count=1)
    stub = await asyncio.to_thread(kubelet.register)
    claim = api_pb2.Claim(namespace=NAMESPACE, name="c", uid="u")
    claim.ClearField(field)
    response = await _prepare(stub, claim)
    assert "needs namespace, name and uid" in response.claims[claim.uid].error
