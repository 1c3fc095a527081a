"""Which emulated devices this process may run on: the inference server's side of the plugin.

Role: called once by the inference server at start-up. In a pod, the device plugin's ``Allocate``
has set ``FPGASERVE_DEVICE_IDS`` and mounted each device's state directory under
``/var/run/fpgaserve/devices/<id>``; the devices are read back from there. A pod the operator marked
with ``FPGASERVE_REQUIRE_DEVICE=1`` that got no device refuses to start. Outside Kubernetes (no
such variables) there is one default emulated device, of the model ``FPGASERVE_DEVICE_MODEL`` names.
Imports neither grpc nor numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fpgaserve.api.constants import (
    DEFAULT_RESOURCE_NAME,
    DEVICE_MOUNT_ROOT,
    ENV_DEVICE_IDS,
    ENV_DEVICE_MODEL,
    ENV_DEVICE_MOUNT_ROOT,
    ENV_REQUIRE_DEVICE,
)
from fpgaserve.deviceplugin.state import DeviceInfo, DeviceStateError, read_device
from fpgaserve.npu.device import DEFAULT_DEVICE_MODEL, get_device_model

__all__ = ["DEFAULT_DEVICE_ID", "DeviceDiscoveryError", "devices_from_environment"]

# The ID of the one device used outside Kubernetes.
DEFAULT_DEVICE_ID = "fpga-local-0"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class DeviceDiscoveryError(RuntimeError):
    """The container's devices are missing or unreadable; the server must not start."""


def _required(env: Mapping[str, str]) -> bool:
    value = env.get(ENV_REQUIRE_DEVICE, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise DeviceDiscoveryError(f"{ENV_REQUIRE_DEVICE}={value!r}: expected 1 or 0")


def devices_from_environment(env: Mapping[str, str], *, mount_root: Path | None = None) -> list[DeviceInfo]:
    """The devices allocated to this container, in allocation order (see the module docstring).

    Allocated devices are returned even when unhealthy (``DeviceInfo.healthy``): a device can fail
    after allocation, and it is the server's readiness, not its start-up, that should say so.
    """
    if mount_root is None:
        mount_root = Path(env.get(ENV_DEVICE_MOUNT_ROOT) or DEVICE_MOUNT_ROOT)
    ids = [device_id.strip() for device_id in env.get(ENV_DEVICE_IDS, "").split(",") if device_id.strip()]
    if not ids:
        if _required(env):
            raise DeviceDiscoveryError(
                f"this pod requires an FPGA ({ENV_REQUIRE_DEVICE} is set) but none was allocated "
                f"({ENV_DEVICE_IDS} is empty): request {DEFAULT_RESOURCE_NAME} in the container's "
                "resources.limits and check that the fpgaserve device plugin runs on the node"
            )
        name = env.get(ENV_DEVICE_MODEL, "").strip() or DEFAULT_DEVICE_MODEL.name
        try:
            model = get_device_model(name)
        except ValueError as exc:
            raise DeviceDiscoveryError(f"{ENV_DEVICE_MODEL}: {exc}") from None
        return [DeviceInfo(device_id=DEFAULT_DEVICE_ID, model=model, healthy=True)]

    devices = []
    for device_id in ids:
        directory = mount_root / device_id
        if not directory.is_dir():
            raise DeviceDiscoveryError(
                f"device {device_id} is allocated ({ENV_DEVICE_IDS}) but its state directory {directory} "
                "is not mounted; was the variable set by hand instead of by the device plugin?"
            )
        try:
            device = read_device(directory)
        except DeviceStateError as exc:
            raise DeviceDiscoveryError(f"device {device_id}: {exc}") from None
        if device.device_id != device_id:
            raise DeviceDiscoveryError(f"{directory} describes device {device.device_id}, not {device_id}")
        devices.append(device)
    return devices
