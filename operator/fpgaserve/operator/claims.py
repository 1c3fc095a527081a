"""The ResourceClaimTemplate of an FpgaWebservice in DRA mode: which FPGAs each replica claims.

Role: a pure builder (no kopf, no client, no I/O) called by ``fpgaserve.operator.reconcile_webservice``;
``fpgaserve.operator.workload`` puts the claim in the pod template. Each replica gets its own
ResourceClaim from the template, asking the DeviceClass of the fpgaserve DRA driver for
``fpga.count`` devices whose weight memory holds the package (``deviceMemoryBytes`` of the
FpgaModel's status, from its manifest) and, when the spec names one, of that device model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fpgaserve.api.constants import DRA_ATTR_MODEL, DRA_CAPACITY_WEIGHT_MEMORY, DRA_DRIVER_NAME
from fpgaserve.api.crd_models import FpgaWebserviceSpec
from fpgaserve.api.naming import object_meta

__all__ = [
    "CLAIM_NAME",
    "build_resource_claim_template",
    "claim_template_name",
    "device_selector",
    "uses_dra",
]

# The pod's resourceClaims entry, the container's claim and the claim's request all use this name.
CLAIM_NAME = "fpga"


def uses_dra(spec: FpgaWebserviceSpec) -> bool:
    """Whether the pods claim FPGAs through DRA (mode DRA and at least one device)."""
    return spec.fpga.mode == "DRA" and spec.fpga.count > 0


def claim_template_name(name: str) -> str:
    return f"{name}-fpga"


def _quantity(value: int) -> str:
    for suffix, factor in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if value and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def device_selector(*, device_model: str | None, min_weight_memory_bytes: int | None) -> str | None:
    """The CEL expression a device must satisfy, or None when any device of the class will do."""
    terms = []
    if device_model is not None:
        # json.dumps quotes like CEL's double-quoted strings (the model is a DNS label anyway).
        terms.append(
            f"device.attributes[{json.dumps(DRA_DRIVER_NAME)}].{DRA_ATTR_MODEL} == {json.dumps(device_model)}"
        )
    if min_weight_memory_bytes:
        capacity = f"device.capacity[{json.dumps(DRA_DRIVER_NAME)}].{DRA_CAPACITY_WEIGHT_MEMORY}"
        terms.append(f'{capacity}.compareTo(quantity("{_quantity(min_weight_memory_bytes)}")) >= 0')
    return " && ".join(terms) or None


def build_resource_claim_template(
    *, owner: Mapping[str, Any], spec: FpgaWebserviceSpec, device_memory_bytes: int | None
) -> dict[str, Any] | None:
    """The template, or None when the pods claim no FPGA through DRA (then any old one is pruned)."""
    if not uses_dra(spec):
        return None
    exactly: dict[str, Any] = {
        "deviceClassName": spec.fpga.device_class_name,
        "allocationMode": "ExactCount",
        "count": spec.fpga.count,
    }
    selector = device_selector(
        device_model=spec.fpga.device_model, min_weight_memory_bytes=device_memory_bytes
    )
    if selector is not None:
        exactly["selectors"] = [{"cel": {"expression": selector}}]
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": object_meta(owner=owner, name=claim_template_name(name)),
        "spec": {"spec": {"devices": {"requests": [{"name": CLAIM_NAME, "exactly": exactly}]}}},
    }
