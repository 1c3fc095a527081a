"""The on-disk device state: stable IDs, descriptions, health files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fpgaserve.deviceplugin.state import (
    DESCRIPTION_FILE,
    HEALTH_FILE,
    DeviceStateError,
    DeviceStore,
    device_ids,
    model_description,
    model_from_description,
    read_device,
    read_health,
)
from fpgaserve.npu.device import DEVICE_MODELS, get_device_model


def test_device_ids_are_stable_unique_per_node_and_short() -> None:
    ids = device_ids(node_name="node-a", count=3)
    assert ids == device_ids(node_name="node-a", count=3)
    assert len(set(ids)) == 3
    assert ids[0].startswith("fpga-") and ids[2].endswith("-2")
    assert set(ids).isdisjoint(device_ids(node_name="node-b", count=3))
    assert all(len(i) <= 63 for i in device_ids(node_name="n" * 253, count=1000))


def test_device_ids_reject_bad_input() -> None:
    with pytest.raises(ValueError):
        device_ids(node_name="", count=1)
    with pytest.raises(ValueError):
        device_ids(node_name="node-a", count=-1)


@pytest.mark.parametrize("name", sorted(DEVICE_MODELS))
def test_model_description_round_trips(name: str) -> None:
    model = get_device_model(name)
    assert model_from_description(json.loads(json.dumps(model_description(model)))) == model


def test_model_from_description_rejects_incomplete() -> None:
    with pytest.raises(DeviceStateError, match="invalid device model"):
        model_from_description({"name": "x"})


def test_create_lays_out_one_directory_per_device(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path / "state")
    devices = store.create(node_name="node-a", count=2, model=get_device_model("pbs-a10"))
    assert [d.device_id for d in devices] == device_ids(node_name="node-a", count=2)
    for index, device in enumerate(devices):
        assert device.state_dir == tmp_path / "state" / device.device_id
        description = json.loads((device.state_dir / DESCRIPTION_FILE).read_text())
        assert description["id"] == device.device_id
        assert description["index"] == index
        assert description["node"] == "node-a"
        assert description["model"]["name"] == "pbs-a10"
        assert (device.state_dir / HEALTH_FILE).read_text() == "Healthy\n"
        assert device.healthy and device.model == get_device_model("pbs-a10")


def test_create_again_keeps_health_and_prunes_devices_no_longer_configured(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    first = store.create(node_name="node-a", count=3, model=get_device_model("pbs-tiny"))
    store.set_health(first[0].device_id, healthy=False, reason="drill")
    (tmp_path / "not-a-device").mkdir()

    again = store.create(node_name="node-a", count=2, model=get_device_model("pbs-s10"))

    assert [d.device_id for d in again] == [d.device_id for d in first[:2]]
    assert not again[0].healthy and again[0].reason == "drill"
    assert again[1].healthy
    assert all(d.model.name == "pbs-s10" for d in again)
    assert not (tmp_path / first[2].device_id).exists()
    assert (tmp_path / "not-a-device").is_dir()  # only our own directories are ever removed


def test_set_health_fails_and_restores(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    device_id = store.create(node_name="node-a", count=1, model=get_device_model("pbs-tiny"))[0].device_id

    failed = store.set_health(device_id, healthy=False, reason="  fan stopped ")
    assert (failed.healthy, failed.reason) == (False, "fan stopped")
    assert (tmp_path / device_id / HEALTH_FILE).read_text() == "Unhealthy\nfan stopped\n"

    restored = store.set_health(device_id, healthy=True)
    assert (restored.healthy, restored.reason) == (True, "")


def test_set_health_refuses_unknown_devices(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    known = store.create(node_name="node-a", count=1, model=get_device_model("pbs-tiny"))[0].device_id
    with pytest.raises(DeviceStateError, match=known):
        store.set_health("fpga-nope-0", healthy=False)
    with pytest.raises(DeviceStateError, match="invalid device ID"):
        store.set_health("../escape", healthy=False)
    assert not (tmp_path / "fpga-nope-0").exists()


@pytest.mark.parametrize(
    ("content", "healthy", "reason"),
    [
        ("Healthy\n", True, ""),
        ("Unhealthy\n", False, "marked unhealthy"),
        ("Unhealthy\nECC errors\n", False, "ECC errors"),
        ("sick\n", False, "unrecognised health 'sick' (expected Healthy or Unhealthy)"),
    ],
)
def test_read_health(tmp_path: Path, content: str, healthy: bool, reason: str) -> None:
    (tmp_path / HEALTH_FILE).write_text(content)
    assert read_health(tmp_path) == (healthy, reason)


def test_missing_health_file_means_unhealthy(tmp_path: Path) -> None:
    healthy, reason = read_health(tmp_path)
    assert not healthy and "no health file" in reason


def test_read_device_rejects_a_directory_without_description(tmp_path: Path) -> None:
    with pytest.raises(DeviceStateError, match="not a device state directory"):
        read_device(tmp_path)
    (tmp_path / DESCRIPTION_FILE).write_text("{not json")
    with pytest.raises(DeviceStateError, match="cannot read"):
        read_device(tmp_path)


def test_empty_or_missing_store_has_no_devices(tmp_path: Path) -> None:
    assert DeviceStore(tmp_path / "missing").read_all() == []
    assert DeviceStore(tmp_path).ids() == []


def test_device_info_makes_an_emulated_device(tmp_path: Path) -> None:
    device = DeviceStore(tmp_path).create(node_name="n", count=1, model=get_device_model("pbs-tiny"))[0]
    emulated = device.emulated()
    assert (emulated.device_id, emulated.model) == (device.device_id, device.model)
