"""The cheap image check every runtime makes before an image joins a batch.

Role: one definition for the pipeline runtime and the test runtime (``inference.testing``): the
header and structure of an encoded image (Pillow's ``verify``), without decoding pixels. Damage
past the header is found when the batch decodes, and the runtime names that input then.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Collection

from fpgaserve.runtime.protocol import InvalidInput

__all__ = ["check_image_header"]


def check_image_header(data: bytes, *, index: int, formats: Collection[str]) -> None:
    """``InvalidInput`` unless ``data`` is an image in one of ``formats`` (Pillow's format names)."""
    from PIL import Image

    if not data:
        raise InvalidInput("empty image", index=index)
    try:
        with Image.open(io.BytesIO(data)) as image:
            known = image.format in formats
            image.verify()
    except (OSError, SyntaxError, ValueError, struct.error):  # Pillow's errors for damaged files
        known = False
    if not known:
        names = sorted(formats)
        listing = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise InvalidInput(f"not a decodable image ({listing} expected)", index=index)
