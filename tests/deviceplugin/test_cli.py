"""``fpgaserve device-plugin``: options, the drill commands, the manifest, and a real run."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from fpgaserve.api.constants import DEFAULT_RESOURCE_NAME
from fpgaserve.cli import device_plugin
from fpgaserve.cli.main import build_parser, main
from fpgaserve.deviceplugin.daemonset import DEFAULT_STATE_DIR, build_daemonset
from fpgaserve.deviceplugin.state import DeviceStore, device_ids
from fpgaserve.deviceplugin.v1beta1 import DEFAULT_SOCKET_DIR
from fpgaserve.npu.device import DEVICE_MODELS
from tests.support.polling import wait_until

from .conftest import FakeKubelet


def test_parser_defaults_agree_with_the_library() -> None:
    assert device_plugin.DEFAULT_RESOURCE_NAME == DEFAULT_RESOURCE_NAME
    assert device_plugin.DEFAULT_SOCKET_DIR == DEFAULT_SOCKET_DIR
    assert device_plugin.DEFAULT_STATE_DIR == DEFAULT_STATE_DIR
    args = build_parser().parse_args(["device-plugin"])
    assert (args.resource_name, args.socket_dir, args.state_dir) == (
        DEFAULT_RESOURCE_NAME,
        DEFAULT_SOCKET_DIR,
        DEFAULT_STATE_DIR,
    )
    assert args.device_model in DEVICE_MODELS


def test_help_names_every_option_and_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["device-plugin", "--help"])
    help_text = capsys.readouterr().out
    for word in [
        "--device-count", "--device-model", "--resource-name", "--socket-dir", "--state-dir",
        "--health-interval", "fpgaserve.io/fpga", "/var/lib/kubelet/device-plugins", "status", "fail",
        "restore", "manifest", *DEVICE_MODELS,
    ]:  # fmt: skip
        assert word in help_text


def test_building_the_parser_imports_no_grpc() -> None:
    code = (
        "import sys; from fpgaserve.cli.main import build_parser; build_parser(); "
        "print('grpc' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_fail_restore_and_status(
    make_store: Callable[..., DeviceStore], capsys: pytest.CaptureFixture[str]
) -> None:
    store = make_store(count=2)
    a, b = store.ids()
    assert main(["device-plugin", "fail", b, "--reason", "drill", "--state-dir", str(store.root)]) == 0
    assert f"{b} is now unhealthy" in capsys.readouterr().out
    assert not store.read(b).healthy and store.read(b).reason == "drill"

    assert main(["device-plugin", "--state-dir", str(store.root), "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "HEALTH", "MODEL", "REASON"]
    assert lines[1].split() == [a, "Healthy", "pbs-tiny"]
    assert lines[2].split() == [b, "Unhealthy", "pbs-tiny", "drill"]

    assert main(["device-plugin", "restore", b, "--state-dir", str(store.root)]) == 0
    assert store.read(b).healthy


def test_drill_commands_explain_their_errors(
    make_store: Callable[..., DeviceStore], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = make_store(count=1)
    assert main(["device-plugin", "fail", "fpga-nope-0", "--state-dir", str(store.root)]) == 2
    assert f"known devices: {store.ids()[0]}" in capsys.readouterr().err
    assert main(["device-plugin", "status", "--state-dir", str(tmp_path / "empty")]) == 2
    assert "is the device plugin running" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--resource-name=kubernetes.io/fpga", "reserved"),
        ("--device-model=pbs-huge", "unknown device model"),
        ("--device-count=0", "at least 1"),
        ("--health-interval=0", "must be > 0"),
    ],
)
def test_bad_options_are_user_errors(
    option: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["device-plugin", option, f"--state-dir={tmp_path}", f"--socket-dir={tmp_path}"]) == 2
    assert message in capsys.readouterr().err


def test_manifest_prints_the_daemonset(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "device-plugin", "manifest", "--namespace=fpga", "--image=example/fpgaserve:1", "--device-count=2",
        "--device-model=pbs-a10", "--node-selector=fpga=yes",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == build_daemonset(
        namespace="fpga",
        image="example/fpgaserve:1",
        device_count=2,
        device_model="pbs-a10",
        node_selector={"fpga": "yes"},
    )
    assert main(["device-plugin", "manifest", "--node-selector=oops"]) == 2


def test_custom_device_model_overrides(tmp_path: Path, socket_dir: Path) -> None:
    # A quick run that cannot register (no kubelet) still lays out the devices first.
    proc = _start_cli(socket_dir, tmp_path / "state", "--weight-memory-mib=2", "--matrix-units=3")
    try:
        store = DeviceStore(tmp_path / "state")
        wait_until(lambda: len(store.ids()) == 2, what="device directories")
        model = store.read_all()[0].model
        assert (model.name, model.weight_memory_bytes, model.matrix_units) == ("pbs-tiny-custom", 2 << 20, 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def _start_cli(socket_dir: Path, state_dir: Path, *extra: str) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-c", "import sys; from fpgaserve.cli.main import main; sys.exit(main())",
        "device-plugin", "--device-count=2", "--device-model=pbs-tiny", "--node-name=node-e2e",
        f"--socket-dir={socket_dir}", f"--state-dir={state_dir}", "--health-interval=0.05",
        "--kubelet-poll-interval=0.05", *extra,
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_command_registers_streams_a_drill_and_stops_on_sigterm(
    kubelet: FakeKubelet, socket_dir: Path, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    proc = _start_cli(socket_dir, state_dir)
    try:
        a, b = device_ids(node_name="node-e2e", count=2)
        kubelet.wait_for_devices({a: "Healthy", b: "Healthy"})
        assert kubelet.requests[0].resource_name == DEFAULT_RESOURCE_NAME

        assert main(["device-plugin", "fail", a, f"--state-dir={state_dir}"]) == 0
        kubelet.wait_for_devices({a: "Unhealthy", b: "Healthy"})
        assert main(["device-plugin", "restore", a, f"--state-dir={state_dir}"]) == 0
        kubelet.wait_for_devices({a: "Healthy", b: "Healthy"})
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=10)[0]
    assert proc.returncode == 0, output
    assert "registered fpgaserve.io/fpga" in output
    assert not list(socket_dir.glob("fpgaserve*.sock"))
