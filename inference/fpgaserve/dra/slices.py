"""The ResourceSlice that advertises one node's emulated FPGAs to the scheduler.

Role: pure builders called by ``fpgaserve.dra.publisher``. One slice per node, in a pool named after
the node (one slice per pool, so ``resourceSliceCount`` is 1); every healthy device is listed with
its attributes (model, matrix units, native dimension, clock, BFP formats, health) and its capacity
(weight memory), under the driver's domain, so that a claim selects on
``device.attributes["fpga.fpgaserve.io"].model`` and ``device.capacity["fpga.fpgaserve.io"].weightMemory``.
An unhealthy device is left out: stable DRA has no per-device health, and a device that is not
listed cannot be allocated.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fpgaserve.api.constants import DRA_ATTR_MODEL, DRA_CAPACITY_WEIGHT_MEMORY
from fpgaserve.deviceplugin.state import DeviceInfo
from fpgaserve.npu.formats import FORMATS

__all__ = ["RESOURCE_API_VERSION", "build_resource_slice", "device_entry", "quantity", "slice_name"]

RESOURCE_API_VERSION = "resource.k8s.io/v1"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def quantity(value: int) -> str:
    """Bytes as a Kubernetes quantity in the largest exact binary unit ("64Mi", "1536Ki", "7")."""
    for suffix, factor in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if value and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def slice_name(*, node_name: str, driver: str) -> str:
    """A DNS-subdomain name unique per node and driver (a hash keeps long node names in bounds)."""
    base = _NOT_DNS.sub("-", f"{node_name}-{driver}".lower()).strip("-")[:200]
    tag = hashlib.sha256(f"{node_name}/{driver}".encode()).hexdigest()[:8]
    return f"{base}-{tag}"


def device_entry(device: DeviceInfo) -> dict[str, Any]:
    """One device of the slice: its name, attributes and capacity (resource.k8s.io/v1 ``Device``)."""
    model = device.model
    return {
        "name": device.device_id,
        "attributes": {
            DRA_ATTR_MODEL: {"string": model.name},
            "matrixUnits": {"int": model.matrix_units},
            "nativeDim": {"int": model.native_dim},
            "clockMHz": {"int": round(model.clock_mhz)},
            "formats": {"string": ",".join(sorted(FORMATS))},
            "healthy": {"bool": device.healthy},
        },
        "capacity": {DRA_CAPACITY_WEIGHT_MEMORY: {"value": quantity(model.weight_memory_bytes)}},
    }


def build_resource_slice(
    *,
    node_name: str,
    driver: str,
    devices: Sequence[DeviceInfo],
    generation: int,
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The node's slice with its healthy devices; ``owner`` (the Node) lets the garbage collector
    delete the slice with the node."""
    metadata: dict[str, Any] = {
        "name": slice_name(node_name=node_name, driver=driver),
        "labels": {"app.kubernetes.io/managed-by": "fpgaserve-dra-driver"},
    }
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    return {
        "apiVersion": RESOURCE_API_VERSION,
        "kind": "ResourceSlice",
        "metadata": metadata,
        "spec": {
            "driver": driver,
            "nodeName": node_name,
            "pool": {"name": node_name, "generation": generation, "resourceSliceCount": 1},
            "devices": [device_entry(device) for device in devices if device.healthy],
        },
    }
