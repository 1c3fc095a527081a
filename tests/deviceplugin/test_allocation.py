"""Allocation decisions: environment and mounts per container, preferred devices."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

import pytest

from fpgaserve.api.constants import DEVICE_MOUNT_ROOT, ENV_DEVICE_IDS, ENV_DEVICE_MODEL
from fpgaserve.deviceplugin.allocation import (
    AllocationError,
    MountSpec,
    allocate_container,
    preferred_devices,
)
from fpgaserve.deviceplugin.state import DeviceStore

HOST = PurePosixPath("/var/lib/kubelet/device-plugins/fpgaserve")


def test_one_device(make_store: Callable[..., DeviceStore]) -> None:
    store = make_store(count=2, model="pbs-a10")
    first = store.ids()[0]
    allocation = allocate_container(requested=[first], devices=store.read_all(), host_state_dir=HOST)
    assert allocation.envs == {ENV_DEVICE_IDS: first, ENV_DEVICE_MODEL: "pbs-a10"}
    assert allocation.mounts == (
        MountSpec(container_path=f"{DEVICE_MOUNT_ROOT}/{first}", host_path=f"{HOST}/{first}", read_only=True),
    )


def test_several_devices_keep_the_kubelets_order_without_duplicates(
    make_store: Callable[..., DeviceStore],
) -> None:
    store = make_store(count=3)
    a, b, c = store.ids()
    allocation = allocate_container(requested=[c, a, c], devices=store.read_all(), host_state_dir=HOST)
    assert allocation.envs[ENV_DEVICE_IDS] == f"{c},{a}"
    assert [m.container_path for m in allocation.mounts] == [
        f"{DEVICE_MOUNT_ROOT}/{c}",
        f"{DEVICE_MOUNT_ROOT}/{a}",
    ]
    assert b not in allocation.envs[ENV_DEVICE_IDS]


def test_unknown_or_unhealthy_devices_fail_the_allocation(make_store: Callable[..., DeviceStore]) -> None:
    store = make_store(count=2)
    a, b = store.ids()
    store.set_health(b, healthy=False)
    with pytest.raises(AllocationError, match="unknown device"):
        allocate_container(requested=[a, "fpga-other-9"], devices=store.read_all(), host_state_dir=HOST)
    with pytest.raises(AllocationError, match=f"{b} became unhealthy"):
        allocate_container(requested=[a, b], devices=store.read_all(), host_state_dir=HOST)
    with pytest.raises(AllocationError, match="no device IDs"):
        allocate_container(requested=[], devices=store.read_all(), host_state_dir=HOST)


def test_preferred_devices_include_the_required_then_lowest_index(
    make_store: Callable[..., DeviceStore],
) -> None:
    store = make_store(count=4)
    d0, d1, d2, d3 = store.ids()
    devices = store.read_all()
    assert preferred_devices(available=[d3, d2, d1, d0], must_include=[], size=2, devices=devices) == [d0, d1]
    assert preferred_devices(available=[d3, d2, d1, d0], must_include=[d3], size=2, devices=devices) == [
        d3,
        d0,
    ]
    assert preferred_devices(available=[d1, d0], must_include=[], size=4, devices=devices) == [d0, d1]


def test_preferred_devices_put_unhealthy_ones_last(make_store: Callable[..., DeviceStore]) -> None:
    store = make_store(count=3)
    d0, d1, d2 = store.ids()
    store.set_health(d0, healthy=False)
    assert preferred_devices(available=[d0, d1, d2], must_include=[], size=2, devices=store.read_all()) == [
        d1,
        d2,
    ]
