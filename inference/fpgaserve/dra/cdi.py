"""The CDI spec of one prepared claim: the env and read-only mounts the device plugin's Allocate gives.

Role: pure builders plus the atomic file write, called by ``fpgaserve.dra.prepare``. Each prepared
claim gets its own spec file in the CDI directory (``/var/run/cdi`` by default), which the container
runtime reads when the kubelet passes it the claim's CDI device IDs. The claim-wide environment
(``FPGASERVE_DEVICE_IDS``, ``FPGASERVE_DEVICE_MODEL``) is in the spec's own ``containerEdits``; each
device carries the read-only mount of its state directory, exactly as ``allocate_container`` decides.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from fpgaserve.deviceplugin.allocation import ContainerAllocation

__all__ = [
    "CDI_KIND",
    "CDI_VERSION",
    "build_cdi_spec",
    "cdi_device_id",
    "remove_spec",
    "spec_path",
    "write_spec",
]

CDI_VERSION = "0.6.0"
CDI_KIND = "fpgaserve.io/fpga"


def _device_name(claim_uid: str, device_id: str) -> str:
    # Unique per claim, so that two claims' specs never define the same device.
    return f"{claim_uid}-{device_id}"


def cdi_device_id(*, claim_uid: str, device_id: str) -> str:
    """The fully qualified CDI device ID the kubelet hands the runtime (``vendor/class=name``)."""
    return f"{CDI_KIND}={_device_name(claim_uid, device_id)}"


def spec_path(*, cdi_dir: Path, claim_uid: str) -> Path:
    """Where the claim's spec lives (CDI's vendor-class file naming)."""
    return cdi_dir / f"fpgaserve.io-fpga_{claim_uid}.json"


def build_cdi_spec(
    *, claim_uid: str, device_ids: list[str], allocation: ContainerAllocation
) -> dict[str, Any]:
    """The spec for the claim's devices (``device_ids`` in the order of ``allocation.mounts``)."""
    if len(device_ids) != len(allocation.mounts):
        raise ValueError("one mount per device expected")
    devices = [
        {
            "name": _device_name(claim_uid, device_id),
            "containerEdits": {
                "mounts": [
                    {
                        "hostPath": mount.host_path,
                        "containerPath": mount.container_path,
                        "options": ["ro", "bind"] if mount.read_only else ["rw", "bind"],
                    }
                ]
            },
        }
        for device_id, mount in zip(device_ids, allocation.mounts, strict=True)
    ]
    return {
        "cdiVersion": CDI_VERSION,
        "kind": CDI_KIND,
        "annotations": {"fpgaserve.io/claim-uid": claim_uid},
        "devices": devices,
        "containerEdits": {"env": [f"{key}={value}" for key, value in sorted(allocation.envs.items())]},
    }


def write_spec(path: Path, spec: dict[str, Any]) -> None:
    """Replace the file atomically: the runtime never reads half a spec."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_spec(path: Path) -> bool:
    """Delete the spec; False when it was already gone."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
