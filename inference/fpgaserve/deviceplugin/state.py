"""The on-disk state of the emulated devices: one small directory per device.

Role: the single place that knows the layout, shared by the device plugin (which creates the
directories and watches their health), the ``fail``/``restore`` commands, and the inference server
(which reads the directories mounted into its container, see ``discovery``)::

    <state dir>/<device id>/device.json   what the device is: ID, index, node, device model
    <state dir>/<device id>/health        "Healthy" or "Unhealthy", optionally a reason on line 2

The description is written once when the plugin starts; the health file is the one thing that
changes, so failing a device by hand is ``echo Unhealthy > health``. Both are replaced atomically,
so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpgaserve.npu.device import DeviceModel, EmulatedDevice

__all__ = [
    "DESCRIPTION_FILE",
    "HEALTH_FILE",
    "DeviceInfo",
    "DeviceStateError",
    "DeviceStore",
    "device_ids",
    "model_description",
    "model_from_description",
    "read_device",
    "read_health",
]

DESCRIPTION_FILE = "device.json"
HEALTH_FILE = "health"
_HEALTHY = "Healthy"
_UNHEALTHY = "Unhealthy"
_MAX_ID_LENGTH = 63  # the kubelet's limit on Device.ID


class DeviceStateError(Exception):
    """A device's state directory is missing, unreadable, or names an unknown device."""


@dataclass(frozen=True)
class DeviceInfo:
    """One emulated device as described by its state directory."""

    device_id: str
    model: DeviceModel
    healthy: bool
    # None for the default device used outside Kubernetes, which has no state directory.
    state_dir: Path | None = None
    index: int = 0
    reason: str = ""

    def emulated(self) -> EmulatedDevice:
        """A fresh run-time board with this device's ID and model."""
        return EmulatedDevice(model=self.model, device_id=self.device_id)


def device_ids(*, node_name: str, count: int) -> list[str]:
    """Stable device IDs for a node: the same node name and count always give the same IDs.

    A short hash of the node name keeps the IDs unique across the cluster (they show up in the
    inference server's logs and metrics) and short enough for the kubelet, whatever the node name.
    """
    if count < 0:
        raise ValueError("device count must be >= 0")
    if not node_name:
        raise ValueError("node name must not be empty")
    tag = hashlib.sha256(node_name.encode()).hexdigest()[:8]
    return [f"fpga-{tag}-{index}" for index in range(count)]


def model_description(model: DeviceModel) -> dict[str, Any]:
    """Every parameter of a device model, JSON-ready (``DeviceModel.describe`` plus the rest)."""
    return {
        **model.describe(),
        "opOverheadCycles": model.op_overhead_cycles,
        "hostLinkGbps": model.host_link_gbps,
    }


def model_from_description(description: dict[str, Any]) -> DeviceModel:
    """The inverse of ``model_description``."""
    try:
        return DeviceModel(
            name=str(description["name"]),
            weight_memory_bytes=int(description["weightMemoryBytes"]),
            matrix_units=int(description["matrixUnits"]),
            native_dim=int(description["nativeDim"]),
            vector_lanes=int(description["vectorLanes"]),
            clock_mhz=float(description["clockMHz"]),
            op_overhead_cycles=int(description["opOverheadCycles"]),
            host_link_gbps=float(description["hostLinkGbps"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DeviceStateError(f"invalid device model description {description!r}: {exc}") from None


def read_health(directory: Path) -> tuple[bool, str]:
    """Health of the device in ``directory`` and the reason; missing or garbled means unhealthy."""
    try:
        text = (directory / HEALTH_FILE).read_text()
    except FileNotFoundError:
        return False, f"no {HEALTH_FILE} file in {directory}"
    except OSError as exc:
        return False, f"cannot read {directory / HEALTH_FILE}: {exc.strerror}"
    status, _, reason = text.strip().partition("\n")
    if status.strip() == _HEALTHY:
        return True, reason.strip()
    if status.strip() == _UNHEALTHY:
        return False, reason.strip() or "marked unhealthy"
    return False, f"unrecognised health {status.strip()!r} (expected {_HEALTHY} or {_UNHEALTHY})"


def read_device(directory: Path) -> DeviceInfo:
    """Read one device's state directory."""
    try:
        raw = json.loads((directory / DESCRIPTION_FILE).read_text())
        device_id = str(raw["id"])
        index = int(raw.get("index", 0))
        model = model_from_description(raw["model"])
    except FileNotFoundError:
        raise DeviceStateError(
            f"{directory} holds no {DESCRIPTION_FILE}: not a device state directory"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeviceStateError(f"cannot read {directory / DESCRIPTION_FILE}: {exc}") from None
    healthy, reason = read_health(directory)
    return DeviceInfo(
        device_id=device_id, model=model, healthy=healthy, state_dir=directory, index=index, reason=reason
    )


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # readable by the inference containers the directory is mounted into
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DeviceStore:
    """The state directories of one node's devices, all under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def device_dir(self, device_id: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", device_id) or len(device_id) > _MAX_ID_LENGTH:
            raise DeviceStateError(f"invalid device ID {device_id!r}")
        return self.root / device_id

    def create(self, *, node_name: str, count: int, model: DeviceModel) -> list[DeviceInfo]:
        """Lay out ``count`` devices of ``model``; keeps the health of devices that already exist.

        Directories of devices no longer configured (a smaller count, another node name) are removed,
        so the kubelet is never told about them again.
        """
        ids = device_ids(node_name=node_name, count=count)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in sorted(set(self.ids()) - set(ids)):
            shutil.rmtree(self.root / stale, ignore_errors=True)
        for index, device_id in enumerate(ids):
            directory = self.device_dir(device_id)
            directory.mkdir(mode=0o755, exist_ok=True)
            description = {
                "id": device_id,
                "index": index,
                "node": node_name,
                "model": model_description(model),
            }
            _write_atomically(directory / DESCRIPTION_FILE, json.dumps(description, indent=2) + "\n")
            if not (directory / HEALTH_FILE).exists():
                _write_atomically(directory / HEALTH_FILE, _HEALTHY + "\n")
        return self.read_all()

    def ids(self) -> list[str]:
        """IDs of the devices laid out under the root, in index order."""
        return [device.device_id for device in self.read_all()]

    def read_all(self) -> list[DeviceInfo]:
        if not self.root.is_dir():
            return []
        devices = []
        for directory in self.root.iterdir():
            if directory.is_dir() and (directory / DESCRIPTION_FILE).exists():
                try:
                    devices.append(read_device(directory))
                except DeviceStateError:
                    continue  # half-removed or foreign directory: not one of ours any more
        return sorted(devices, key=lambda d: (d.index, d.device_id))

    def read(self, device_id: str) -> DeviceInfo:
        directory = self.device_dir(device_id)
        if not (directory / DESCRIPTION_FILE).exists():
            known = ", ".join(self.ids()) or "none"
            raise DeviceStateError(f"no device {device_id!r} under {self.root} (known devices: {known})")
        return read_device(directory)

    def set_health(self, device_id: str, *, healthy: bool, reason: str = "") -> DeviceInfo:
        """Fail or restore a device; the plugin streams the change to the kubelet on its next check."""
        self.read(device_id)  # refuse unknown IDs rather than creating a stray directory
        status = _HEALTHY if healthy else _UNHEALTHY
        text = f"{status}\n{reason.strip()}\n" if reason.strip() else f"{status}\n"
        _write_atomically(self.device_dir(device_id) / HEALTH_FILE, text)
        return self.read(device_id)
