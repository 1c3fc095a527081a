"""The operator stays small: importing it loads no TensorFlow, numpy, emulator, SDK or server.
Checked in fresh interpreters, since this test session itself imports all of them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("tensorflow", "keras", "numpy", "numba", "fpgaserve.npu", "fpgaserve.sdk", "fpgaserve.compiler")
FORBIDDEN = (*HEAVY, "fpgaserve.inference")


def loaded_after(code: str) -> list[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(result.stdout)
    return modules


def matching(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(f"{p}.") for p in prefixes)]


def test_operator_package_imports_nothing_heavy() -> None:
    modules = loaded_after(
        "import fpgaserve.operator.runner, fpgaserve.operator.manifest, fpgaserve.api.crdgen, fpgaserve.cli.operator"
    )
    assert "kopf" in modules and "fpgaserve.operator.handlers" in modules
    assert matching(modules, FORBIDDEN) == []


def test_operator_command_imports_nothing_heavy() -> None:
    # Through the console script's parser, which every subcommand's module takes part in.
    modules = loaded_after(
        "from fpgaserve.cli.main import build_parser\nbuild_parser().parse_args(['operator', '--namespace', 'x'])"
    )
    # The shared parser lists the BFP formats (classify, compile, quickstart): their numpy-free
    # definitions may load; nothing that computes may.
    light = {"fpgaserve.npu", "fpgaserve.npu.formats"}
    assert [m for m in matching(modules, HEAVY) if m not in light] == []
