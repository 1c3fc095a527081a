"""Compiled kernels shipped in the image: seed numba's cache directory from a read-only copy.

Role: ``kernels_numba`` calls ``seed_numba_cache`` once at import, before it defines its kernels;
``fpgaserve warm-kernels`` (``fpgaserve.npu.precompile``) fills the copy at image build time.

numba's on-disk cache needs a *writable* directory: it picks a kernel's directory when the kernel is
decorated, testing it with a temporary file, and a kernel that misses the cache (a signature or a CPU
it does not hold) is compiled and saved there. A directory in a read-only root filesystem therefore
cannot be numba's cache itself. The image keeps its compiled kernels in ``FPGASERVE_KERNEL_CACHE``
(read-only) and the pod gives numba a writable ``NUMBA_CACHE_DIR`` (the ``/tmp`` emptyDir the
operator mounts); this module copies the image's files that the writable directory lacks into it,
a few MiB in a few milliseconds, before numba looks. Then:

- on a node whose CPU is the one the image was built on (numba keys entries on LLVM's CPU name and
  feature flags), every kernel loads from the cache and nothing is compiled;
- on any other CPU the entries do not match, numba compiles each kernel at its first call, as
  without the image's copy, and saves it in the writable directory, where it stays for the pod's
  life (container restarts included; a new pod starts from the image's copy again).

With ``FPGASERVE_KERNEL_CACHE`` but no ``NUMBA_CACHE_DIR`` (a pod spec that drops it), numba's cache
becomes ``numba-cache`` in the temporary directory (``TMPDIR``, else ``/tmp``): numba's own fallbacks, next
to the sources and in the home directory, are read-only there, and with no writable place at all numba
refuses to define a cached kernel. Without ``FPGASERVE_KERNEL_CACHE`` nothing happens (numba's own
defaults: a ``__pycache__`` next to the source).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from typing import Any

__all__ = ["IMAGE_CACHE_ENV", "cache_counts", "seed_numba_cache"]

logger = logging.getLogger(__name__)

IMAGE_CACHE_ENV = "FPGASERVE_KERNEL_CACHE"


def seed_numba_cache(*, source: str | None = None, target: str | None = None) -> int:
    """Copy the image's compiled kernels (``source``, default ``$FPGASERVE_KERNEL_CACHE``) that numba's
    cache directory (``target``, default numba's ``NUMBA_CACHE_DIR``) lacks; returns how many files.

    Files already there are kept: they are this pod's, saved after a miss, and hold the image's
    entries too (numba adds to an index it loaded). Each copy lands under a temporary name and is
    renamed, so two processes seeding one directory never see half a file."""
    source = source if source is not None else os.environ.get(IMAGE_CACHE_ENV, "")
    if target is None:
        import numba

        target = str(getattr(numba.config, "CACHE_DIR", "") or "")
        if source and not target:
            target = os.path.join(tempfile.gettempdir(), "numba-cache")
            numba.config.CACHE_DIR = target  # type: ignore[attr-defined]  # read when each kernel is defined
    if not source or not target or not os.path.isdir(source):
        return 0
    if os.path.abspath(source) == os.path.abspath(target):
        return 0  # the build itself, filling the image's copy
    copied = 0
    try:
        for root, _dirs, files in os.walk(source):
            dest_dir = os.path.join(target, os.path.relpath(root, source))
            for name in files:
                dest = os.path.join(dest_dir, name)
                if os.path.exists(dest):
                    continue
                os.makedirs(dest_dir, exist_ok=True)
                partial = f"{dest}.seed-{uuid.uuid4().hex[:8]}"
                shutil.copyfile(os.path.join(root, name), partial)
                os.replace(partial, dest)
                copied += 1
    except OSError as exc:  # a read-only or full target: numba compiles what it cannot load
        logger.warning("cannot seed numba's cache %s from %s: %s", target, source, exc)
    logger.debug("seeded numba's cache %s with %d files from %s", target, copied, source)
    return copied


def cache_counts(dispatchers: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Per dispatcher: (signatures loaded from the cache, signatures compiled) in this process."""
    counts = {}
    for name, dispatcher in dispatchers.items():
        stats = dispatcher.stats
        counts[name] = (sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
    return counts
