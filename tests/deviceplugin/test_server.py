"""Registration with a fake kubelet that speaks the real API, and re-registration on restarts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from fpgaserve.api.constants import DEFAULT_RESOURCE_NAME, ENV_DEVICE_IDS
from fpgaserve.deviceplugin.server import RegistrationError, check_resource_name, socket_name_for
from fpgaserve.deviceplugin.v1beta1 import api_pb2
from tests.support.polling import wait_until

from .conftest import FakeKubelet, RunningPlugin


def _healthy(ids: list[str]) -> dict[str, str]:
    return dict.fromkeys(ids, "Healthy")


def test_registers_and_the_kubelet_sees_the_devices(
    kubelet: FakeKubelet, start_plugin: Callable[..., RunningPlugin]
) -> None:
    running = start_plugin(count=2)
    kubelet.wait_for_registrations(1)
    (request,) = kubelet.requests
    assert request.version == "v1beta1"
    assert request.resource_name == DEFAULT_RESOURCE_NAME
    assert request.endpoint == socket_name_for(DEFAULT_RESOURCE_NAME) == running.server.socket_path.name
    assert request.options.get_preferred_allocation_available
    assert kubelet.options[0] == request.options
    kubelet.wait_for_devices(_healthy(running.ids))


def test_health_changes_reach_the_kubelet(
    kubelet: FakeKubelet, start_plugin: Callable[..., RunningPlugin]
) -> None:
    running = start_plugin(count=2)
    a, b = running.ids
    kubelet.wait_for_devices(_healthy([a, b]))

    running.store.set_health(b, healthy=False, reason="drill")
    kubelet.wait_for_devices({a: "Healthy", b: "Unhealthy"})
    running.store.set_health(b, healthy=True)
    kubelet.wait_for_devices(_healthy([a, b]))


def test_the_kubelet_allocates_through_the_registered_socket(
    kubelet: FakeKubelet, start_plugin: Callable[..., RunningPlugin]
) -> None:
    running = start_plugin(count=2)
    kubelet.wait_for_registrations(1)
    request = api_pb2.AllocateRequest(
        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=running.ids)]
    )
    response = kubelet.plugin().Allocate(request, timeout=5)
    assert response.container_responses[0].envs[ENV_DEVICE_IDS] == ",".join(running.ids)


def test_registers_again_after_a_kubelet_restart(
    kubelet: FakeKubelet, start_plugin: Callable[..., RunningPlugin]
) -> None:
    running = start_plugin(count=2)
    kubelet.wait_for_devices(_healthy(running.ids))

    kubelet.restart()  # deletes kubelet.sock and the plugin's socket, serves a new kubelet.sock
    kubelet.wait_for_registrations(2)
    wait_until(lambda: running.server.socket_path.exists(), what="a fresh plugin socket")
    running.store.set_health(running.ids[0], healthy=False)
    kubelet.wait_for_devices({running.ids[0]: "Unhealthy", running.ids[1]: "Healthy"})
    # The plugin counts a registration once the kubelet's answer is back, a moment after the kubelet.
    # It may register once more than needed (a kubelet replaced while it registered: twice is
    # harmless, never is not; server.run), so at least two.
    wait_until(lambda: running.server.registrations >= 2, what="the plugin to count two registrations")
    assert not running.errors


def test_registers_again_when_only_its_own_socket_is_removed(
    kubelet: FakeKubelet, start_plugin: Callable[..., RunningPlugin]
) -> None:
    running = start_plugin(count=1)
    kubelet.wait_for_registrations(1)
    running.server.socket_path.unlink()
    kubelet.wait_for_registrations(2)


def test_waits_for_a_kubelet_that_starts_later(
    socket_dir: Path, start_plugin: Callable[..., RunningPlugin]
) -> None:
    running = start_plugin(count=1)
    fake = FakeKubelet(socket_dir)
    try:
        assert running.server.registrations == 0
        fake.start()
        fake.wait_for_registrations(1)
        fake.wait_for_devices(_healthy(running.ids))
    finally:
        fake.stop()


def test_a_refused_registration_stops_the_plugin(
    kubelet: FakeKubelet, start_plugin: Callable[..., RunningPlugin]
) -> None:
    kubelet.reject_with = "resource fpgaserve.io/fpga is already registered"
    running = start_plugin(count=1)
    running.thread.join(timeout=5)
    assert not running.thread.is_alive()
    (error,) = running.errors
    assert isinstance(error, RegistrationError)
    assert "already registered" in str(error)
    assert not running.server.socket_path.exists()


def test_stopping_removes_the_socket(
    kubelet: FakeKubelet, start_plugin: Callable[..., RunningPlugin]
) -> None:
    running = start_plugin(count=1)
    kubelet.wait_for_registrations(1)
    running.stop.set()
    running.thread.join(timeout=5)
    assert not running.thread.is_alive()
    assert not running.server.socket_path.exists()


def test_stopping_leaves_a_socket_it_did_not_create(
    kubelet: FakeKubelet, start_plugin: Callable[..., RunningPlugin], tmp_path: Path
) -> None:
    running = start_plugin(count=1)
    kubelet.wait_for_registrations(1)
    # As in a rollout, where the next plugin pod already serves at the same path.
    successor = tmp_path / "successor"
    successor.write_text("the next pod's socket")
    os.replace(successor, running.server.socket_path)
    running.stop.set()
    running.thread.join(timeout=5)
    assert running.server.socket_path.read_text() == "the next pod's socket"


@pytest.mark.parametrize("name", ["fpgaserve.io/fpga", "example.com/fpga-s10", "a.b.c/x_y.z"])
def test_valid_resource_names(name: str) -> None:
    check_resource_name(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fpga", "DOMAIN/NAME"),
        ("Fpgaserve.IO/fpga", "DOMAIN/NAME"),
        ("fpgaserve.io/", "DOMAIN/NAME"),
        ("fpgaserve.io/-fpga", "DOMAIN/NAME"),
        ("fpgaserve.io/a/b", "DOMAIN/NAME"),
        ("kubernetes.io/fpga", "reserved"),
        ("node.kubernetes.io/fpga", "reserved"),
    ],
)
def test_invalid_resource_names(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_resource_name(name)
