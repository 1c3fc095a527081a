"""The lazily resolved exports of ``fpgaserve.npu``, ``.server`` and ``.sdk`` name the modules their
``TYPE_CHECKING`` imports name.

Those packages resolve their names on first use (``__getattr__`` over an ``_EXPORTS`` table) so that
importing them stays cheap; mypy reads only the ``TYPE_CHECKING`` imports. A name moved to another
module and updated in one place but not the other type-checks clean and fails at run time, so the two
are compared here, from the source, without importing anything heavy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "inference" / "fpgaserve"


def _exports(tree: ast.Module, package: str) -> dict[str, str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets
        ):
            table = ast.literal_eval(node.value)
            # npu and server name their submodules relatively, sdk with the full path.
            return {
                name: mod if mod.startswith("fpgaserve.") else f"{package}.{mod}"
                for name, mod in table.items()
            }
    raise AssertionError(f"{package} has no _EXPORTS table")


def _type_checking_imports(tree: ast.Module) -> dict[str, str]:
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module, ast.dump(stmt)
                for alias in stmt.names:
                    found[alias.asname or alias.name] = stmt.module
    return found


@pytest.mark.parametrize("package", ["npu", "server", "sdk"])
def test_lazy_exports_match_their_type_checking_imports(package: str) -> None:
    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    exports = _exports(tree, f"fpgaserve.{package}")
    assert exports == _type_checking_imports(tree)
    for name, module in exports.items():  # and the module really defines the name
        source = ROOT.parent / (module.replace(".", "/") + ".py")
        if not source.exists():
            source = source.with_suffix("") / "__init__.py"
        assert name in source.read_text(), f"{module} does not define {name}"
