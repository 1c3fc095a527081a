"""numba's typing registries loaded without the optional bindings no fpgaserve kernel uses.

Role: ``fpgaserve serve``'s load thread (``cli/serve.py``) calls ``load_numba_typing`` once, before
the pipeline's first kernel call.

numba loads its typing registries at the first call of any jitted function, and two of them import
optional packages when they can:

- ``numba.np.arraymath`` checks whether BLAS is there by importing ``scipy.linalg.cython_blas``,
  which imports all of ``scipy.linalg`` (0.35 s of a 2.9 s start and about 16 MiB), for ``np.dot``
  and ``np.linalg`` inside jitted code;
- ``numba.core.typing.cffi_utils`` imports ``cffi`` and makes an ``FFI()``, which imports
  pycparser and compiles its lexer's regular expressions (about 0.1 s), for cffi functions passed
  to jitted code.

No fpgaserve kernel does either. The serve-slim image has no SciPy, so its numba runs without
SciPy's BLAS already; the full image (scikit-image needs SciPy) and a development environment paid
for the import, and both have cffi (cryptography's dependency).

``load_numba_typing`` imports each of those two numba modules while a finder at the front of
``sys.meta_path`` refuses its optional package, then removes the finder. Afterwards:

- ``import scipy.linalg`` and ``import cffi`` work as before, and so does TensorFlow;
- a function jitted later that calls ``np.dot`` or ``np.linalg`` imports SciPy's BLAS when it is
  compiled (numba checks again there) and works as usual (tests/runtime/test_numba_typing.py);
- numba in this process does not type cffi objects (its ``cffi_utils.SUPPORTED`` is false): a jitted
  function given a cffi function fails to compile with numba's "cannot determine Numba type" error.

A package already imported (another part of the process paid for it) is not refused, and a numba
module already imported is left as it is. While a finder is in place (the import of one numba
module, in the load thread) another thread's import of the refused package would fail; the server
imports neither.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Sequence
from types import ModuleType

__all__ = ["OPTIONAL", "load_numba_typing"]

# numba's typing module -> the optional package it imports, refused while it is imported.
OPTIONAL = {"numba.np.arraymath": "scipy.linalg", "numba.core.typing.cffi_utils": "cffi"}

_lock = threading.Lock()


class _Refuse(importlib.abc.MetaPathFinder):
    def __init__(self, package: str) -> None:
        self.package = package

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == self.package or fullname.startswith(f"{self.package}."):
            raise ImportError(f"{fullname} is not imported while numba loads its typing")
        return None


def load_numba_typing() -> list[str]:
    """Import numba's typing modules of ``OPTIONAL``; returns the packages this call kept out."""
    kept_out = []
    with _lock:
        for module, package in OPTIONAL.items():
            if module in sys.modules or package in sys.modules:
                importlib.import_module(module)
                continue
            finder = _Refuse(package)
            sys.meta_path.insert(0, finder)
            try:
                importlib.import_module(module)
            finally:
                sys.meta_path.remove(finder)
            if package not in sys.modules:
                kept_out.append(package)
    return kept_out
