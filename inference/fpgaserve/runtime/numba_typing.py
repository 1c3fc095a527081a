"""numba's array typing loaded without SciPy's linear algebra, for the serving process.

Role: ``fpgaserve serve``'s load thread (``cli/serve.py``) calls ``load_numba_array_typing`` once,
before the pipeline's first kernel call.

numba loads its typing registries at the first call of any jitted function; one of them,
``numba.np.arraymath``, checks at its import whether BLAS is there by importing
``scipy.linalg.cython_blas``, which imports all of ``scipy.linalg``: 0.35 s of a 2.9 s start and
about 16 MiB, for ``np.dot`` and ``np.linalg`` inside jitted code, which no fpgaserve kernel uses.
The serve-slim image has no SciPy at all, so its numba runs this way already; the full image
(scikit-image needs SciPy) and a development environment paid for the import.

``load_numba_array_typing`` imports ``numba.np.arraymath`` while a finder at the front of
``sys.meta_path`` refuses ``scipy.linalg``, then removes the finder. Nothing else changes:
``import scipy.linalg`` works as before afterwards, and so does TensorFlow; a function jitted later
that calls ``np.dot`` or ``np.linalg`` imports SciPy's BLAS when it is compiled (numba checks again
there) and works as usual (tests/runtime/test_numba_typing.py). It does nothing when
``scipy.linalg`` or ``numba.np.arraymath`` was imported already (the cost is paid). While the finder
is in place (the import of one numba module, in the load thread) another thread's import of
``scipy.linalg`` would fail; the server imports nothing of SciPy.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Sequence
from types import ModuleType

__all__ = ["load_numba_array_typing"]

_lock = threading.Lock()
_REFUSED = "scipy.linalg"


class _RefuseScipyLinalg(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == _REFUSED or fullname.startswith(f"{_REFUSED}."):
            raise ImportError(f"{fullname} is not imported while numba loads its array typing")
        return None


def load_numba_array_typing() -> bool:
    """Import numba's array typing; True when this call imported it with ``scipy.linalg`` kept out."""
    with _lock:
        if "numba.np.arraymath" in sys.modules or _REFUSED in sys.modules:
            importlib.import_module("numba.np.arraymath")
            return False
        finder = _RefuseScipyLinalg()
        sys.meta_path.insert(0, finder)
        try:
            importlib.import_module("numba.np.arraymath")
        finally:
            sys.meta_path.remove(finder)
        return _REFUSED not in sys.modules
