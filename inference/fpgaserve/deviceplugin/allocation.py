"""What a container gets for its devices, and which devices the plugin would rather hand out.

Role: the pure decisions behind the plugin's ``Allocate`` and ``GetPreferredAllocation`` (see
``plugin``), in plain data so that they are tested without gRPC. The environment variable names and
the container mount root are the contract in ``fpgaserve.api.constants``, which the inference server
reads back through ``discovery``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from fpgaserve.api.constants import DEVICE_MOUNT_ROOT, ENV_DEVICE_IDS, ENV_DEVICE_MODEL
from fpgaserve.deviceplugin.state import DeviceInfo

__all__ = ["AllocationError", "ContainerAllocation", "MountSpec", "allocate_container", "preferred_devices"]


class AllocationError(Exception):
    """The kubelet asked for devices that this plugin cannot give."""


@dataclass(frozen=True)
class MountSpec:
    container_path: str
    host_path: str
    read_only: bool


@dataclass(frozen=True)
class ContainerAllocation:
    envs: dict[str, str]
    mounts: tuple[MountSpec, ...]


def allocate_container(
    *, requested: Sequence[str], devices: Sequence[DeviceInfo], host_state_dir: PurePosixPath
) -> ContainerAllocation:
    """Environment and mounts for one container given the IDs the kubelet picked.

    ``devices`` is the current state of this node's devices; ``host_state_dir`` is the state
    directory as the node sees it (the kubelet mounts host paths). Unknown or unhealthy devices fail
    the whole allocation, as the Device Plugin API asks.
    """
    if not requested:
        raise AllocationError("no device IDs in the container request")
    by_id = {device.device_id: device for device in devices}
    unknown = [device_id for device_id in requested if device_id not in by_id]
    if unknown:
        raise AllocationError(
            f"unknown device(s) {', '.join(unknown)}; this node has {', '.join(by_id) or 'none'}"
        )
    unhealthy = [device_id for device_id in requested if not by_id[device_id].healthy]
    if unhealthy:
        raise AllocationError(f"device(s) {', '.join(unhealthy)} became unhealthy; retry on other devices")
    chosen = [by_id[device_id] for device_id in dict.fromkeys(requested)]
    models = sorted({device.model.name for device in chosen})
    envs = {
        ENV_DEVICE_IDS: ",".join(device.device_id for device in chosen),
        ENV_DEVICE_MODEL: ",".join(models),
    }
    mounts = tuple(
        MountSpec(
            container_path=str(PurePosixPath(DEVICE_MOUNT_ROOT) / device.device_id),
            host_path=str(host_state_dir / device.device_id),
            # The container reads its devices' description and health; only the plugin writes them.
            read_only=True,
        )
        for device in chosen
    )
    return ContainerAllocation(envs=envs, mounts=mounts)


def preferred_devices(
    *, available: Sequence[str], must_include: Sequence[str], size: int, devices: Sequence[DeviceInfo]
) -> list[str]:
    """The devices to prefer: the required ones, then healthy ones by index, then the rest.

    Lowest index first keeps allocations predictable, which makes failure drills easy to follow.
    """
    order = {device.device_id: (not device.healthy, device.index) for device in devices}
    picked = list(dict.fromkeys(must_include))
    rest = sorted(
        (device_id for device_id in dict.fromkeys(available) if device_id not in picked),
        key=lambda device_id: order.get(device_id, (True, len(order))),
    )
    for device_id in rest:
        if len(picked) >= size:
            break
        picked.append(device_id)
    return picked
