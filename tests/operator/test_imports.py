"""The operator stays small and self-contained.

Two rules, checked in fresh interpreters (this test session itself imports everything):
- importing the operator loads no TensorFlow, numpy, emulator, SDK or server;
- everything the operator process imports lives under the ``operator/`` source root (the shared
  contracts ``fpgaserve.api`` and ``fpgaserve.operator``), so its slim image needs nothing else.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("tensorflow", "keras", "numpy", "numba", "fpgaserve.npu", "fpgaserve.sdk", "fpgaserve.compiler")
FORBIDDEN = (*HEAVY, "fpgaserve.server")
OPERATOR_ROOT = Path(__file__).resolve().parents[2] / "operator"
OPERATOR_PACKAGES = ("fpgaserve.api", "fpgaserve.operator")
# What the operator process imports: its entry point and every module of its own packages.
OPERATOR_PROCESS = "import fpgaserve.operator.cli, fpgaserve.operator.runner, fpgaserve.api.crdgen"


def loaded_after(code: str) -> dict[str, str | None]:
    """Module name -> file of every module a fresh interpreter has loaded after ``code``."""
    probe = (
        f"import json, sys\n{code}\n"
        "print(json.dumps({n: getattr(m, '__file__', None) for n, m in list(sys.modules.items())}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    modules: dict[str, str | None] = json.loads(result.stdout)
    return modules


def matching(modules: dict[str, str | None], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(f"{p}.") for p in prefixes))


def test_operator_package_imports_nothing_heavy() -> None:
    modules = loaded_after(f"{OPERATOR_PROCESS}, fpgaserve.operator.install_objects")
    assert "kopf" in modules and "fpgaserve.operator.handlers" in modules
    assert matching(modules, FORBIDDEN) == []


def _requirement_names() -> set[str]:
    lines = (OPERATOR_ROOT / "requirements.txt").read_text().splitlines()
    return {
        re.split(r"[<>=!~ \[;]", line, maxsplit=1)[0].lower()
        for line in lines
        if line and not line.startswith("#")
    }


def test_requirements_are_what_the_operator_imports() -> None:
    # The slim image installs operator/requirements.txt and nothing else: every third-party module
    # the operator root imports must come from a distribution listed there, and every listed one
    # must be imported (directly) by some operator module.
    imported: set[str] = set()
    for path in OPERATOR_ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.partition(".")[0])
    third_party = {
        m for m in imported if m not in sys.stdlib_module_names and m not in ("fpgaserve", "__future__")
    }
    providers = importlib.metadata.packages_distributions()
    needed = {providers[m][0].lower() for m in third_party}
    assert needed == _requirement_names()


def test_requirements_keep_the_projects_lower_bounds() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((OPERATOR_ROOT.parent / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = [
        line
        for line in (OPERATOR_ROOT / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert set(listed) <= set(project)


def test_operator_never_loads_the_asyncio_kubernetes_client() -> None:
    # The operator image drops kubernetes.aio (Dockerfile).
    assert matching(loaded_after(OPERATOR_PROCESS), ("kubernetes.aio",)) == []


def test_operator_process_imports_only_the_operator_root() -> None:
    modules = loaded_after(OPERATOR_PROCESS)
    ours = {name: file for name, file in modules.items() if name.startswith("fpgaserve.") and file}
    assert "fpgaserve.operator.reconcile_webservice" in ours
    outside = {
        name: file for name, file in ours.items() if not Path(file).resolve().is_relative_to(OPERATOR_ROOT)
    }
    assert outside == {}, "the operator process imported modules from outside operator/"


def _fpgaserve_imports(path: Path) -> list[str]:
    """Absolute ``fpgaserve.*`` modules a source file imports, wherever the import statement is."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return [name for name in found if name == "fpgaserve" or name.startswith("fpgaserve.")]


@pytest.mark.parametrize(
    "path", sorted(OPERATOR_ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(OPERATOR_ROOT))
)
def test_operator_root_imports_only_itself(path: Path) -> None:
    # Static, so that a lazy import inside a function (never run by the probe above) counts too.
    bad = [m for m in _fpgaserve_imports(path) if not matching({m: None}, OPERATOR_PACKAGES)]
    assert bad == [], f"{path.name} imports from the inference root"


def test_the_static_check_sees_a_lazy_import(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from fpgaserve.package.fetch import x\n    import fpgaserve.api.errors\n"
    )
    assert _fpgaserve_imports(source) == ["fpgaserve.package.fetch", "fpgaserve.api.errors"]


def test_operator_command_imports_nothing_heavy() -> None:
    # Through the console script's parser, which every subcommand's module takes part in.
    modules = loaded_after(
        "from fpgaserve.cli.main import build_parser\nbuild_parser().parse_args(['operator', '--namespace', 'x'])"
    )
    # The shared parser lists the BFP formats (classify, compile, quickstart, package) and the
    # default model path (fpgaserve.sdk's __init__ is lazy): their numpy-free definitions may load;
    # nothing that computes may.
    light = {"fpgaserve.npu", "fpgaserve.npu.formats", "fpgaserve.sdk", "fpgaserve.sdk.model_path"}
    assert [m for m in matching(modules, HEAVY) if m not in light] == []


def test_the_inference_root_uses_only_the_operators_command_line() -> None:
    # The console script adds the operator's own parser, and that is all: what the cluster SDK shares
    # with the operator (kinds, object names, Secret keys) lives in fpgaserve.api.
    inference_root = OPERATOR_ROOT.parent / "inference"
    used = {
        (path.relative_to(inference_root).as_posix(), module)
        for path in inference_root.rglob("*.py")
        for module in _fpgaserve_imports(path)
        if matching({module: None}, ("fpgaserve.operator",))
    }
    assert used == set(), sorted(used)
    # ... by name, imported only when `fpgaserve operator` runs (fpgaserve.cli.main's COMMANDS).
    from fpgaserve.cli.main import COMMANDS

    named = {c.module for c in COMMANDS.values() if matching({c.module: None}, ("fpgaserve.operator",))}
    assert named == {"fpgaserve.operator.cli"}
