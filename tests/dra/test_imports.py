"""The DRA driver runs without TensorFlow and numpy: grpc and the kubernetes client are enough."""

from __future__ import annotations

import subprocess
import sys


def test_the_driver_imports_neither_tensorflow_nor_numpy() -> None:
    code = (
        "import sys\n"
        "import fpgaserve.cli.dra_driver, fpgaserve.dra.server, fpgaserve.dra.manifest, fpgaserve.dra.protogen\n"
        "from fpgaserve.cli import dra_driver\n"
        "import fpgaserve.dra.prepare, fpgaserve.dra.publisher, fpgaserve.dra.service\n"
        "heavy = sorted(m for m in ('tensorflow', 'numpy', 'keras') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
