"""The ResourceSlice builder: names, quantities, which devices are listed, schema validity."""

from __future__ import annotations

import kubernetes_validate
import pytest

from fpgaserve.deviceplugin.state import DeviceInfo
from fpgaserve.dra.slices import build_resource_slice, quantity, slice_name
from fpgaserve.npu.device import get_device_model


@pytest.mark.parametrize(
    ("value", "expected"), [(64 << 20, "64Mi"), (1536 << 10, "1536Ki"), (3 << 30, "3Gi"), (7, "7"), (0, "0")]
)
def test_quantity(value: int, expected: str) -> None:
    assert quantity(value) == expected


def test_slice_names_are_dns_subdomains_unique_per_node() -> None:
    long = "n" * 250 + ".Example.COM"
    names = {slice_name(node_name=n, driver="fpga.fpgaserve.io") for n in ("a", "b", long)}
    assert len(names) == 3
    assert all(len(n) <= 253 and n == n.lower() for n in names)


def test_unhealthy_devices_are_left_out_and_the_slice_is_valid() -> None:
    model = get_device_model("pbs-a10")
    devices = [
        DeviceInfo(device_id="fpga-x-0", model=model, healthy=True, index=0),
        DeviceInfo(device_id="fpga-x-1", model=model, healthy=False, index=1),
    ]
    built = build_resource_slice(
        node_name="node-a",
        driver="fpga.fpgaserve.io",
        devices=devices,
        generation=4,
        owner={"metadata": {"name": "node-a", "uid": "u-1"}},
    )
    assert [d["name"] for d in built["spec"]["devices"]] == ["fpga-x-0"]
    assert built["metadata"]["ownerReferences"][0]["kind"] == "Node"
    kubernetes_validate.validate(built, "1.34", strict=True)
