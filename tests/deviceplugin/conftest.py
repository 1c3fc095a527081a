"""Fixtures for the device plugin tests: short socket directories, device stores, a running
plugin, and a fake kubelet that speaks the real Device Plugin API over real unix sockets."""

from __future__ import annotations

import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import pytest

from fpgaserve.api.constants import DEFAULT_RESOURCE_NAME
from fpgaserve.deviceplugin.health import HealthMonitor
from fpgaserve.deviceplugin.plugin import FpgaDevicePlugin
from fpgaserve.deviceplugin.server import PluginServer
from fpgaserve.deviceplugin.state import DeviceStore
from fpgaserve.deviceplugin.v1beta1 import API_VERSION, KUBELET_SOCKET_NAME, api_pb2, api_pb2_grpc
from fpgaserve.npu.device import get_device_model
from tests.support.polling import DEADLINE


class FakeKubelet(api_pb2_grpc.RegistrationServicer):
    """The kubelet's side of the Device Plugin API, as the real one behaves.

    Serves ``Registration`` on ``kubelet.sock``; on ``Register`` it checks the version, dials the
    plugin's socket back, asks for its options and watches ``ListAndWatch`` in a thread, recording
    every device list. ``restart`` deletes every socket in the directory (plugin sockets included)
    and serves a new ``kubelet.sock``, like a restarting kubelet.
    """

    def __init__(self, socket_dir: Path) -> None:
        self.socket_dir = socket_dir
        self.socket_path = socket_dir / KUBELET_SOCKET_NAME
        self.requests: list[Any] = []
        self.options: list[Any] = []
        self.updates: list[dict[str, str]] = []  # every ListAndWatch message, as {id: health}
        self.reject_with: str | None = None
        self._cond = threading.Condition()
        self._server: Any = None
        self._channels: list[Any] = []
        self._stubs: list[Any] = []

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        api_pb2_grpc.add_RegistrationServicer_to_server(self, server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"unix:{self.socket_path}")
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
        for channel in self._channels:
            channel.close()
        self._channels.clear()

    def restart(self) -> None:
        self.stop()
        for path in self.socket_dir.iterdir():
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
        self.start()

    def Register(self, request: Any, context: Any) -> Any:
        if request.version != API_VERSION:
            context.abort(grpc.StatusCode.UNKNOWN, f"unsupported version {request.version!r}")
        if self.reject_with:
            context.abort(grpc.StatusCode.UNKNOWN, self.reject_with)
        channel = grpc.insecure_channel(f"unix:{self.socket_dir / request.endpoint}")
        grpc.channel_ready_future(channel).result(timeout=DEADLINE)
        stub = api_pb2_grpc.DevicePluginStub(channel)  # type: ignore[no-untyped-call]
        options = stub.GetDevicePluginOptions(api_pb2.Empty(), timeout=DEADLINE)
        with self._cond:
            self._channels.append(channel)
            self._stubs.append(stub)
            self.requests.append(request)
            self.options.append(options)
            self._cond.notify_all()
        # Like the kubelet, watch only once the plugin is recorded as registered.
        stream = stub.ListAndWatch(api_pb2.Empty())
        threading.Thread(target=self._watch, args=(stream,), daemon=True).start()
        return api_pb2.Empty()

    def _watch(self, stream: Any) -> None:
        try:
            for response in stream:
                with self._cond:
                    self.updates.append({d.ID: d.health for d in response.devices})
                    self._cond.notify_all()
        except grpc.RpcError:
            return  # the plugin or this kubelet went away

    def wait_for(self, predicate: Callable[[], bool], *, what: str, timeout: float = DEADLINE) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(f"fake kubelet: timed out after {timeout}s waiting for {what}")

    def wait_for_registrations(self, count: int) -> None:
        self.wait_for(lambda: len(self.requests) >= count, what=f"{count} registration(s)")

    def wait_for_devices(self, expected: dict[str, str]) -> None:
        self.wait_for(
            lambda: bool(self.updates) and self.updates[-1] == expected, what=f"device list {expected}"
        )

    def plugin(self) -> Any:
        """A DevicePlugin stub on the connection of the latest registration."""
        with self._cond:
            return self._stubs[-1]


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="fpdp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def kubelet(socket_dir: Path) -> Iterator[FakeKubelet]:
    fake = FakeKubelet(socket_dir)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., DeviceStore]:
    def make(*, count: int = 2, model: str = "pbs-tiny", node_name: str = "node-a") -> DeviceStore:
        store = DeviceStore(tmp_path / "state")
        store.create(node_name=node_name, count=count, model=get_device_model(model))
        return store

    return make


@dataclass
class RunningPlugin:
    server: PluginServer
    monitor: HealthMonitor
    store: DeviceStore
    stop: threading.Event
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return self.store.ids()


@pytest.fixture
def start_plugin(
    socket_dir: Path, make_store: Callable[..., DeviceStore]
) -> Iterator[Callable[..., RunningPlugin]]:
    """Starts ``PluginServer.run`` in a thread with fast polling; stops it at teardown."""
    running: list[RunningPlugin] = []

    def start(*, count: int = 2, resource_name: str = DEFAULT_RESOURCE_NAME) -> RunningPlugin:
        store = make_store(count=count)
        monitor = HealthMonitor(store=store, interval=0.02)
        monitor.start()
        plugin = FpgaDevicePlugin(
            monitor=monitor, host_state_dir=PurePosixPath("/host/state"), stream_wakeup=0.2
        )
        server = PluginServer(
            plugin=plugin, socket_dir=socket_dir, resource_name=resource_name, poll_interval=0.02
        )
        stop = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                server.run(stop)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        handle = RunningPlugin(
            server=server, monitor=monitor, store=store, stop=stop, thread=thread, errors=errors
        )
        running.append(handle)
        thread.start()
        return handle

    yield start
    for handle in running:
        handle.stop.set()
        handle.thread.join(timeout=DEADLINE)
        handle.monitor.close()
        assert not handle.thread.is_alive(), "plugin did not stop"
