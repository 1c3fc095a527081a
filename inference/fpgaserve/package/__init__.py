"""Service packages on the reading side: verify, extract, fetch.

Role: what ``storage-init`` and the pipeline runtime use to turn a ``service_def.zip`` into a
verified directory (``reader``), and to download one from file://, pvc://, http(s):// or s3://
(``fetch``, with ``fpgaserve.api.sigv4``). The writing side is ``fpgaserve.sdk``; the format is
``fpgaserve.api.manifest``. No TensorFlow and no numpy here.
"""

from __future__ import annotations

from fpgaserve.package.reader import (
    DEFAULT_LIMITS,
    PackageError,
    PackageLimits,
    ServiceDefinition,
    load_service_definition,
    verify_package,
)

__all__ = [
    "DEFAULT_LIMITS",
    "PackageError",
    "PackageLimits",
    "ServiceDefinition",
    "load_service_definition",
    "verify_package",
]
