"""The cheap image checks every runtime and the server make before an image joins a batch.

Role: one definition for the pipeline runtime, the test runtime (``server.testing``) and the
server's data plane: the header and structure of an encoded image (Pillow's ``verify``) and its
pixel count, without decoding pixels. Damage past the header is found when the batch decodes, and
the runtime names that input then. The pixel limit is what bounds the memory a decode takes: it is
read from the header, so a small file that claims a huge image is refused before any pixel exists.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Collection
from typing import Any

from fpgaserve.api.serving import IMAGE_PIXELS_CEILING
from fpgaserve.runtime.protocol import InvalidInput

__all__ = ["PILLOW_MAX_PIXELS", "check_image_header", "check_image_pixels"]

# Pillow refuses (DecompressionBombError) images of more than this when it opens them; a configured
# pixel limit above it cannot be honoured.
PILLOW_MAX_PIXELS = IMAGE_PIXELS_CEILING

_warnings_silenced = False


def _open(data: bytes) -> Any:
    """``Image.open`` without Pillow's decompression-bomb warning: our own limit is what applies."""
    global _warnings_silenced
    from PIL import Image

    if not _warnings_silenced:
        # The warning fires for images over 89 MP (well over any sane limit of ours) and would be
        # printed from a worker thread with no request context; the refusal names the limit.
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        _warnings_silenced = True
    return Image.open(io.BytesIO(data))


def _too_many(pixels: str, max_pixels: int, *, index: int) -> InvalidInput:
    return InvalidInput(
        f"image of {pixels} pixels exceeds the limit of {max_pixels} pixels (--max-image-pixels); "
        "resize it before sending",
        index=index,
    )


def check_image_pixels(data: bytes, *, index: int, max_pixels: int) -> int:
    """The pixel count the header of ``data`` declares; ``InvalidInput`` if over ``max_pixels``.

    Data that is not an image passes (0): the runtime's own check names that problem.
    """
    from PIL import Image

    try:
        with _open(data) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise _too_many(f"more than {PILLOW_MAX_PIXELS}", max_pixels, index=index) from None
    except (OSError, SyntaxError, ValueError, struct.error):
        return 0
    if width * height > max_pixels:
        raise _too_many(f"{width}x{height} = {width * height}", max_pixels, index=index)
    return int(width * height)


def check_image_header(data: bytes, *, index: int, formats: Collection[str]) -> None:
    """``InvalidInput`` unless ``data`` is an image in one of ``formats`` (Pillow's format names)."""
    from PIL import Image

    if not data:
        raise InvalidInput("empty image", index=index)
    try:
        with _open(data) as image:
            known = image.format in formats
            image.verify()
    except Image.DecompressionBombError:
        # Pillow's own ceiling; the server's smaller --max-image-pixels normally refuses it first.
        raise InvalidInput(
            f"image of more than {PILLOW_MAX_PIXELS} pixels is refused as a decompression bomb",
            index=index,
        ) from None
    except (OSError, SyntaxError, ValueError, struct.error):  # Pillow's errors for damaged files
        known = False
    if not known:
        names = sorted(formats)
        listing = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise InvalidInput(f"not a decodable image ({listing} expected)", index=index)
