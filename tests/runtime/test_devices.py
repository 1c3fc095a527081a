"""The runtime and the server pick up the devices the device plugin allocated (issue 5, part 3)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from fpgaserve.api.constants import ENV_DEVICE_IDS, ENV_REQUIRE_DEVICE
from fpgaserve.deviceplugin import discovery
from fpgaserve.deviceplugin.discovery import DeviceDiscoveryError
from fpgaserve.deviceplugin.state import DeviceStore
from fpgaserve.npu.device import get_device_model
from fpgaserve.runtime.pipeline import load_pipeline


def test_allocated_devices_are_the_ones_the_runtime_runs_on(tiny_package: Path, tmp_path: Path) -> None:
    allocated = DeviceStore(tmp_path).create(node_name="node-a", count=2, model=get_device_model("pbs-a10"))
    env = {ENV_DEVICE_IDS: ",".join(d.device_id for d in allocated), ENV_REQUIRE_DEVICE: "1"}
    real = discovery.devices_from_environment
    # The plugin mounts the state directories at DEVICE_MOUNT_ROOT; here they live under tmp_path.
    with mock.patch.object(discovery, "devices_from_environment", lambda e: real(e, mount_root=tmp_path)):
        runtime = load_pipeline(tiny_package, env=env, warmup=False)
    try:
        assert [d.device_id for d in runtime.devices] == [d.device_id for d in allocated]
        assert {d.model.name for d in runtime.devices} == {"pbs-a10"}
    finally:
        runtime.close()


def test_a_pod_that_requires_a_device_and_got_none_refuses_to_load(tiny_package: Path) -> None:
    with pytest.raises(DeviceDiscoveryError, match="requires an FPGA"):
        load_pipeline(tiny_package, env={ENV_REQUIRE_DEVICE: "1"}, warmup=False)


def test_the_server_refuses_to_start_without_its_required_device(tiny_package: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, ENV_REQUIRE_DEVICE: "1"}
    env.pop(ENV_DEVICE_IDS, None)
    argv = [sys.executable, "-m", "fpgaserve.cli.main", "serve", str(tiny_package), "--host", "127.0.0.1",
            "--port", str(port)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode != 0
    assert "requires an FPGA" in done.stdout + done.stderr
