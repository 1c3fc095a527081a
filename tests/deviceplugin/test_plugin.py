"""The DevicePlugin service, called over a real unix socket as the kubelet calls it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import pytest

from fpgaserve.api.constants import DEFAULT_RESOURCE_NAME, DEVICE_MOUNT_ROOT, ENV_DEVICE_IDS, ENV_DEVICE_MODEL
from fpgaserve.deviceplugin.health import HealthMonitor
from fpgaserve.deviceplugin.plugin import FpgaDevicePlugin
from fpgaserve.deviceplugin.server import PluginServer
from fpgaserve.deviceplugin.state import DeviceStore
from fpgaserve.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc

HOST_STATE = PurePosixPath("/host/state")


@dataclass
class Served:
    stub: Any
    store: DeviceStore
    monitor: HealthMonitor


@pytest.fixture
def served(socket_dir: Path, make_store: Callable[..., DeviceStore]) -> Iterator[Served]:
    store = make_store(count=3, model="pbs-tiny")
    monitor = HealthMonitor(store=store, interval=0.02)
    monitor.start()
    plugin = FpgaDevicePlugin(monitor=monitor, host_state_dir=HOST_STATE, stream_wakeup=0.2)
    server = PluginServer(plugin=plugin, socket_dir=socket_dir, resource_name=DEFAULT_RESOURCE_NAME)
    server.start_serving()
    channel = grpc.insecure_channel(f"unix:{server.socket_path}")
    try:
        stub = api_pb2_grpc.DevicePluginStub(channel)  # type: ignore[no-untyped-call]
        yield Served(stub=stub, store=store, monitor=monitor)
    finally:
        channel.close()
        server.stop_serving()
        monitor.close()


def _allocate(stub: Any, *containers: list[str]) -> Any:
    request = api_pb2.AllocateRequest(
        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=ids) for ids in containers]
    )
    return stub.Allocate(request, timeout=5)


def test_options_offer_preferred_allocation_and_no_prestart(served: Served) -> None:
    options = served.stub.GetDevicePluginOptions(api_pb2.Empty(), timeout=5)
    assert options.get_preferred_allocation_available
    assert not options.pre_start_required


def test_list_and_watch_sends_the_devices_then_every_health_change(served: Served) -> None:
    ids = served.store.ids()
    stream = served.stub.ListAndWatch(api_pb2.Empty(), timeout=10)
    try:
        first = next(stream)
        assert [(d.ID, d.health) for d in first.devices] == [(i, "Healthy") for i in ids]

        served.store.set_health(ids[1], healthy=False, reason="drill")
        failed = next(stream)
        assert {d.ID: d.health for d in failed.devices} == {
            ids[0]: "Healthy",
            ids[1]: "Unhealthy",
            ids[2]: "Healthy",
        }

        served.store.set_health(ids[1], healthy=True)
        restored = next(stream)
        assert all(d.health == "Healthy" for d in restored.devices)
    finally:
        stream.cancel()


def test_allocate_one_device(served: Served) -> None:
    device_id = served.store.ids()[0]
    response = _allocate(served.stub, [device_id])
    (container,) = response.container_responses
    assert dict(container.envs) == {ENV_DEVICE_IDS: device_id, ENV_DEVICE_MODEL: "pbs-tiny"}
    assert [(m.container_path, m.host_path, m.read_only) for m in container.mounts] == [
        (f"{DEVICE_MOUNT_ROOT}/{device_id}", f"{HOST_STATE}/{device_id}", True)
    ]
    assert not container.devices


def test_allocate_several_devices_for_several_containers(served: Served) -> None:
    a, b, c = served.store.ids()
    response = _allocate(served.stub, [a, b], [c])
    first, second = response.container_responses
    assert first.envs[ENV_DEVICE_IDS] == f"{a},{b}"
    assert [m.host_path for m in first.mounts] == [f"{HOST_STATE}/{a}", f"{HOST_STATE}/{b}"]
    assert second.envs[ENV_DEVICE_IDS] == c
    assert [m.container_path for m in second.mounts] == [f"{DEVICE_MOUNT_ROOT}/{c}"]


def test_allocate_refuses_a_device_that_failed_since_the_last_poll(served: Served) -> None:
    a, b, _ = served.store.ids()
    served.store.set_health(b, healthy=False)
    with pytest.raises(grpc.RpcError) as caught:
        _allocate(served.stub, [a, b])
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert b in caught.value.details()


def test_allocate_refuses_unknown_devices(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _allocate(served.stub, ["fpga-elsewhere-0"])
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "unknown device" in caught.value.details()


def test_get_preferred_allocation(served: Served) -> None:
    d0, d1, d2 = served.store.ids()
    request = api_pb2.PreferredAllocationRequest(
        container_requests=[
            api_pb2.ContainerPreferredAllocationRequest(available_deviceIDs=[d2, d1, d0], allocation_size=2),
            api_pb2.ContainerPreferredAllocationRequest(
                available_deviceIDs=[d2, d1, d0], must_include_deviceIDs=[d2], allocation_size=2
            ),
        ]
    )
    response = served.stub.GetPreferredAllocation(request, timeout=5)
    assert [list(r.deviceIDs) for r in response.container_responses] == [[d0, d1], [d2, d0]]


def test_pre_start_container_accepts_healthy_and_refuses_failed_devices(served: Served) -> None:
    a, b, _ = served.store.ids()
    served.stub.PreStartContainer(api_pb2.PreStartContainerRequest(devices_ids=[a, b]), timeout=5)
    served.store.set_health(b, healthy=False)
    with pytest.raises(grpc.RpcError) as caught:
        served.stub.PreStartContainer(api_pb2.PreStartContainerRequest(devices_ids=[a, b]), timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
