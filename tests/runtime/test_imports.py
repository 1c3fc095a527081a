"""Import boundary of the serving path (issue 14): no module of the server, the runtime, the package
reader or the command line imports TensorFlow or Keras when imported (only a TensorFlow stage, when
loaded, does: runtime.pipeline's ``_CpuStage``)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import fpgaserve.cli
import fpgaserve.package
import fpgaserve.runtime
import fpgaserve.server


def serving_modules() -> list[str]:
    names = []
    for package in (fpgaserve.server, fpgaserve.runtime, fpgaserve.package, fpgaserve.cli):
        names += [m.name for m in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")]
    return sorted(names)


def test_serving_modules_import_no_tensorflow() -> None:
    modules = serving_modules()
    assert "fpgaserve.runtime.host_stages" in modules and "fpgaserve.server.dataplane" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
