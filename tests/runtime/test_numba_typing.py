"""numba's typing without scipy.linalg and cffi (``fpgaserve.runtime.numba_typing``), in fresh interpreters.

The serving process loads numba's typing with both kept out; afterwards SciPy and cffi import as
usual, and a jitted ``np.dot`` still compiles (numba imports SciPy's BLAS then). A process that has
``scipy.linalg`` already is left as it is.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("scipy.linalg")  # without SciPy and cffi there is nothing to keep out
pytest.importorskip("cffi")

KEPT_OUT = """
import sys
import numba
import numpy as np
from fpgaserve.runtime.numba_typing import load_numba_typing

print(load_numba_typing(), [m for m in ("scipy.linalg", "cffi") if m in sys.modules])
print(load_numba_typing())  # a second call changes nothing

@numba.njit(cache=False)
def dot(a, b):
    return np.dot(a, b)

print(dot(np.eye(3), np.full((3, 3), 2.0)).sum())
import scipy.linalg
import cffi
print(scipy.linalg.inv(np.eye(2) * 4.0)[0, 0], cffi.FFI().sizeof("int"))
"""

ALREADY = """
import scipy.linalg
from fpgaserve.runtime.numba_typing import load_numba_typing
import numba.np.arraymath as arraymath

print(load_numba_typing(), arraymath._HAVE_BLAS)
"""


def _run(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split("\n")[:-1]


def test_typing_loads_without_scipy_linalg_and_cffi_which_still_import_afterwards() -> None:
    assert _run(KEPT_OUT) == ["['scipy.linalg', 'cffi'] []", "[]", "18.0", "0.25 4"]


def test_a_process_with_scipy_linalg_keeps_numbas_blas() -> None:
    assert _run(ALREADY) == ["['cffi'] True"]
