"""numba's array typing without scipy.linalg (``fpgaserve.runtime.numba_typing``), in fresh interpreters.

The serving process loads numba's typing with ``scipy.linalg`` kept out; afterwards SciPy imports as
usual, and a jitted ``np.dot`` still compiles (numba imports SciPy's BLAS then). A process that has
``scipy.linalg`` already is left as it is.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("scipy.linalg")  # without SciPy there is nothing to keep out

KEPT_OUT = """
import sys
import numba
import numpy as np
from fpgaserve.runtime.numba_typing import load_numba_array_typing

print(load_numba_array_typing(), "scipy.linalg" in sys.modules)
print(load_numba_array_typing())  # a second call changes nothing

@numba.njit(cache=False)
def dot(a, b):
    return np.dot(a, b)

print(dot(np.eye(3), np.full((3, 3), 2.0)).sum())
import scipy.linalg
print(scipy.linalg.inv(np.eye(2) * 4.0)[0, 0])
"""

ALREADY = """
import sys
import scipy.linalg
from fpgaserve.runtime.numba_typing import load_numba_array_typing
import numba.np.arraymath as arraymath

print(load_numba_array_typing(), arraymath._HAVE_BLAS)
"""


def _run(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split("\n")[:-1]


def test_array_typing_loads_without_scipy_linalg_which_still_imports_afterwards() -> None:
    assert _run(KEPT_OUT) == ["True False", "False", "18.0", "0.25"]


def test_a_process_with_scipy_linalg_keeps_numbas_blas() -> None:
    assert _run(ALREADY) == ["False True"]
