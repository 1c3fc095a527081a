"""Fixtures for the DRA driver tests: kmock's Kubernetes emulator with the resource.k8s.io/v1 kinds,
a fake kubelet that speaks the real plugin registration and DRA v1 APIs over unix sockets, and a
running driver (restartable over the same directories)."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import kmock
import pytest
from kubernetes.client import ApiClient, Configuration

from fpgaserve.api.constants import DRA_DRIVER_NAME
from fpgaserve.deviceplugin.health import HealthMonitor
from fpgaserve.deviceplugin.state import DeviceStore
from fpgaserve.dra.checkpoint import Checkpoint
from fpgaserve.dra.kubeapi import KubeApi, claim_path
from fpgaserve.dra.pluginregistration import DRA_PLUGIN_TYPE
from fpgaserve.dra.pluginregistration import api_pb2 as reg_pb2
from fpgaserve.dra.pluginregistration import api_pb2_grpc as reg_grpc
from fpgaserve.dra.prepare import ClaimPreparer
from fpgaserve.dra.publisher import SlicePublisher
from fpgaserve.dra.server import DriverServer, registration_socket_name
from fpgaserve.dra.service import DraService
from fpgaserve.dra.v1 import DRA_PLUGIN_SERVICE, api_pb2_grpc
from fpgaserve.npu.device import get_device_model
from tests.operator.cluster import Cluster, declare_resources
from tests.support.polling import DEADLINE, wait_until

NODE = "node-a"
NAMESPACE = "default"
_VERBS = {"get", "list", "watch", "create", "patch", "delete", "update"}


class FakeKubelet:
    """The kubelet's plugin watcher and DRA manager, as the real ones behave.

    ``register`` waits for the driver's socket in the registry directory, dials it, asks
    ``GetInfo``, checks the type and that ``v1.DRAPlugin`` is supported, dials the DRA endpoint, and
    reports success with ``NotifyRegistrationStatus``; it returns the ``DRAPlugin`` stub the kubelet
    would call for claims.
    """

    def __init__(self, registry_dir: Path) -> None:
        self.registry_dir = registry_dir
        self.infos: list[Any] = []
        self._channels: list[Any] = []

    def register(self, driver: str = DRA_DRIVER_NAME) -> Any:
        socket = self.registry_dir / registration_socket_name(driver)
        wait_until(socket.exists, what=f"the registration socket {socket}")
        channel = grpc.insecure_channel(f"unix:{socket}")
        self._channels.append(channel)
        registration = reg_grpc.RegistrationStub(channel)  # type: ignore[no-untyped-call]
        info = registration.GetInfo(reg_pb2.InfoRequest(), timeout=DEADLINE)
        self.infos.append(info)
        error = ""
        if info.type != DRA_PLUGIN_TYPE:
            error = f"unexpected plugin type {info.type!r}"
        elif DRA_PLUGIN_SERVICE not in info.supported_versions:
            error = f"none of {list(info.supported_versions)} is supported"
        dra_channel = grpc.insecure_channel(f"unix:{info.endpoint}")
        self._channels.append(dra_channel)
        if not error:
            grpc.channel_ready_future(dra_channel).result(timeout=DEADLINE)
        registration.NotifyRegistrationStatus(
            reg_pb2.RegistrationStatus(plugin_registered=not error, error=error), timeout=DEADLINE
        )
        assert not error, error
        return api_pb2_grpc.DRAPluginStub(dra_channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


@pytest.fixture
def dirs() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="fpdra-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def kubelet(dirs: Path) -> Iterator[FakeKubelet]:
    fake = FakeKubelet(dirs / "registry")
    yield fake
    fake.close()


def declare_dra_resources(cluster: kmock.KubernetesEmulator) -> None:
    """Discovery for the resource.k8s.io/v1 kinds the driver and the operator use, and nodes."""
    info = kmock.ResourceInfo
    cluster.resources["resource.k8s.io/v1/resourceslices"] = info(
        kind="ResourceSlice", namespaced=False, verbs=_VERBS
    )
    cluster.resources["resource.k8s.io/v1/resourceclaims"] = info(
        kind="ResourceClaim", namespaced=True, verbs=_VERBS, subresources={"status"}
    )
    cluster.resources["v1/nodes"] = info(kind="Node", namespaced=False, verbs=_VERBS)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with Cluster() as emulator, kmock.Server(emulator):
        declare_resources(emulator)
        declare_dra_resources(emulator)
        yield emulator


@dataclass
class RunningDriver:
    server: DriverServer
    monitor: HealthMonitor
    preparer: ClaimPreparer
    store: DeviceStore
    stop: threading.Event
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return self.store.ids()

    def shutdown(self) -> None:
        self.stop.set()
        self.thread.join(timeout=DEADLINE)
        self.monitor.close()
        assert not self.thread.is_alive(), "driver did not stop"


@pytest.fixture
def start_driver(dirs: Path, cluster: Cluster) -> Iterator[Callable[..., RunningDriver]]:
    """Runs ``DriverServer.run`` in a thread over ``dirs`` with fast polling; stops it at teardown.
    Starting again over the same directories is a driver restart."""
    running: list[RunningDriver] = []
    api = KubeApi(ApiClient(Configuration(host=str(cluster.url).rstrip("/"))))

    def start(*, count: int = 2, model: str = "pbs-tiny") -> RunningDriver:
        store = DeviceStore(dirs / "state")
        store.create(node_name=NODE, count=count, model=get_device_model(model))
        monitor = HealthMonitor(store=store, interval=0.02)
        monitor.start()
        preparer = ClaimPreparer(
            driver=DRA_DRIVER_NAME,
            node_name=NODE,
            read_claim=lambda ns, name: api.get(claim_path(ns, name), what="get claim"),
            devices=lambda: monitor.check().devices,
            checkpoint=Checkpoint(dirs / "plugin" / "checkpoint.json"),
            cdi_dir=dirs / "cdi",
            host_state_dir=PurePosixPath("/host/state"),
        )
        server = DriverServer(
            driver=DRA_DRIVER_NAME,
            dra=DraService(preparer=preparer),
            monitor=monitor,
            publisher=SlicePublisher(api=api, node_name=NODE, driver=DRA_DRIVER_NAME),
            plugin_dir=dirs / "plugin",
            registry_dir=dirs / "registry",
            poll_interval=0.02,
        )
        stop = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                server.run(stop)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        handle = RunningDriver(server, monitor, preparer, store, stop, thread, errors)
        running.append(handle)
        thread.start()
        return handle

    yield start
    for handle in running:
        if not handle.stop.is_set():
            handle.shutdown()
    api.close()


def claim_body(
    *, name: str, devices: list[str], pool: str = NODE, driver: str = DRA_DRIVER_NAME
) -> dict[str, Any]:
    """A ResourceClaim as the scheduler leaves it once allocated (status.allocation)."""
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "devices": {"requests": [{"name": "fpga", "exactly": {"deviceClassName": DRA_DRIVER_NAME}}]}
        },
        "status": {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": "fpga", "driver": driver, "pool": pool, "device": device}
                        for device in devices
                    ]
                }
            }
        },
    }


async def create_claim(cluster: Cluster, body: dict[str, Any]) -> dict[str, Any]:
    response = await cluster.post(
        f"/apis/resource.k8s.io/v1/namespaces/{NAMESPACE}/resourceclaims", json=body
    )
    assert response.status == 200, await response.text()
    created: dict[str, Any] = await response.json()
    return created
