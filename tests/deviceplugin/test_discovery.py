"""How the inference server finds its devices: from Allocate's env and mounts, or the default."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from fpgaserve.api.constants import DEVICE_MOUNT_ROOT, ENV_DEVICE_IDS, ENV_DEVICE_MODEL, ENV_REQUIRE_DEVICE
from fpgaserve.deviceplugin.allocation import allocate_container
from fpgaserve.deviceplugin.discovery import DEFAULT_DEVICE_ID, DeviceDiscoveryError, devices_from_environment
from fpgaserve.deviceplugin.state import DeviceStore
from fpgaserve.npu.device import DEFAULT_DEVICE_MODEL, get_device_model


def _mount_like_the_kubelet(store: DeviceStore, ids: list[str], mount_root: Path) -> dict[str, str]:
    """What a container sees after Allocate: its env, and each host path at its container path."""
    allocation = allocate_container(
        requested=ids, devices=store.read_all(), host_state_dir=PurePosixPath(store.root)
    )
    for mount in allocation.mounts:
        target = mount_root / PurePosixPath(mount.container_path).relative_to(DEVICE_MOUNT_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(mount.host_path)
    return allocation.envs


def test_outside_kubernetes_there_is_one_default_device(tmp_path: Path) -> None:
    (device,) = devices_from_environment({}, mount_root=tmp_path)
    assert (device.device_id, device.model, device.healthy, device.state_dir) == (
        DEFAULT_DEVICE_ID,
        DEFAULT_DEVICE_MODEL,
        True,
        None,
    )


def test_outside_kubernetes_the_model_can_be_chosen(tmp_path: Path) -> None:
    (device,) = devices_from_environment(
        {ENV_DEVICE_MODEL: "pbs-tiny", ENV_REQUIRE_DEVICE: "0"}, mount_root=tmp_path
    )
    assert device.model == get_device_model("pbs-tiny")
    with pytest.raises(DeviceDiscoveryError, match="unknown device model 'pbs-huge'"):
        devices_from_environment({ENV_DEVICE_MODEL: "pbs-huge"}, mount_root=tmp_path)


def test_reads_the_allocated_devices_back(make_store: Callable[..., DeviceStore], tmp_path: Path) -> None:
    store = make_store(count=3, model="pbs-a10")
    _, b, c = store.ids()
    env = _mount_like_the_kubelet(store, [c, b], tmp_path / "mnt")
    store.set_health(c, healthy=False, reason="drill")

    devices = devices_from_environment({**env, ENV_REQUIRE_DEVICE: "1"}, mount_root=tmp_path / "mnt")

    assert [d.device_id for d in devices] == [c, b]
    assert all(d.model == get_device_model("pbs-a10") for d in devices)
    # A device that fails after allocation is reported, not hidden: readiness decides.
    assert [d.healthy for d in devices] == [False, True]
    assert devices[1].emulated().device_id == b


def test_a_pod_that_requires_a_device_refuses_to_start_without_one(tmp_path: Path) -> None:
    with pytest.raises(DeviceDiscoveryError, match=r"requires an FPGA .* fpgaserve.io/fpga"):
        devices_from_environment({ENV_REQUIRE_DEVICE: "1"}, mount_root=tmp_path)
    with pytest.raises(DeviceDiscoveryError, match="expected 1 or 0"):
        devices_from_environment({ENV_REQUIRE_DEVICE: "maybe"}, mount_root=tmp_path)


def test_allocated_devices_must_be_mounted(make_store: Callable[..., DeviceStore], tmp_path: Path) -> None:
    store = make_store(count=1)
    with pytest.raises(DeviceDiscoveryError, match="is not mounted"):
        devices_from_environment({ENV_DEVICE_IDS: store.ids()[0]}, mount_root=tmp_path / "mnt")


def test_a_mount_must_describe_the_device_it_is_named_after(
    make_store: Callable[..., DeviceStore], tmp_path: Path
) -> None:
    store = make_store(count=2)
    a, b = store.ids()
    (tmp_path / "mnt").mkdir()
    (tmp_path / "mnt" / a).symlink_to(store.root / b)
    with pytest.raises(DeviceDiscoveryError, match=f"describes device {b}, not {a}"):
        devices_from_environment({ENV_DEVICE_IDS: a}, mount_root=tmp_path / "mnt")
    (tmp_path / "mnt" / "fpga-empty-0").mkdir()
    with pytest.raises(DeviceDiscoveryError, match="not a device state directory"):
        devices_from_environment({ENV_DEVICE_IDS: "fpga-empty-0"}, mount_root=tmp_path / "mnt")


def _imported_by_plugin_modules(*, bare_npu_package: bool) -> list[str]:
    code = (
        "import importlib.util, sys, types\n"
        "if BARE:\n"
        "    # Stand in for fpgaserve.npu's __init__, so that only our own imports are measured.\n"
        "    spec = importlib.util.find_spec('fpgaserve.npu')\n"
        "    package = types.ModuleType('fpgaserve.npu')\n"
        "    package.__path__ = list(spec.submodule_search_locations)\n"
        "    sys.modules['fpgaserve.npu'] = package\n"
        "import fpgaserve.deviceplugin.discovery, fpgaserve.deviceplugin.server\n"
        "print(' '.join(sorted(m for m in ('numpy', 'numba', 'tensorflow', 'yaml') if m in sys.modules)))\n"
    ).replace("BARE", str(bare_npu_package))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_the_plugin_and_discovery_import_neither_numpy_nor_tensorflow_themselves() -> None:
    assert _imported_by_plugin_modules(bare_npu_package=True) == []


def test_the_plugin_and_discovery_import_neither_numpy_nor_tensorflow() -> None:
    assert _imported_by_plugin_modules(bare_npu_package=False) == []


def test_discovery_does_not_import_grpc() -> None:
    code = "import sys, fpgaserve.deviceplugin.discovery; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
