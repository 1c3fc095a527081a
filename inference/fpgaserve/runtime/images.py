"""The cheap image checks every runtime and the server make before an image joins a batch.

Role: one definition for the pipeline runtime, the test runtime (``server.testing``) and the
server's data plane: the header and structure of an encoded image (Pillow's ``verify``) and its
pixel count, without decoding pixels. Damage past the header is found when the batch decodes, and
the runtime names that input then. The pixel limit is what bounds the memory a decode takes: it is
read from the header, so a small file that claims a huge image is refused before any pixel exists
(a JPEG's or PNG's header is read here without Pillow, as the server does it on its event loop).
A JPEG over it is let through when the runtime decodes it at a reduced DCT scale that fits
(``jpeg_reduction``; the host preprocessing stage, ``runtime.host_stages``, does).
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Collection
from typing import Any

from fpgaserve.api.serving import IMAGE_PIXELS_CEILING
from fpgaserve.runtime.protocol import InvalidInput

__all__ = [
    "DECODABLE_FORMATS",
    "PILLOW_MAX_PIXELS",
    "check_image_header",
    "check_image_pixels",
    "jpeg_reduction",
    "open_image",
]

# What the preprocessing stage decodes: tf.io.decode_image's formats (WebP since TensorFlow 2.18 or
# so; an older TensorFlow refuses it in predict, which names the input all the same), and Pillow's.
DECODABLE_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP"})
# libjpeg's DCT scaling factors (Pillow's draft mode), in the order tried.
_JPEG_FACTORS = (1, 2, 4, 8)

# Pillow refuses (DecompressionBombError) images of more than this when it opens them; a configured
# pixel limit above it cannot be honoured.
PILLOW_MAX_PIXELS = IMAGE_PIXELS_CEILING

_warnings_silenced = False


def open_image(data: bytes) -> Any:
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


def jpeg_reduction(width: int, height: int, *, max_pixels: int) -> int | None:
    """The smallest DCT scaling divisor (1, 2, 4 or 8) that decodes a ``width`` x ``height`` JPEG
    into at most ``max_pixels`` pixels; None if even 1/8 is over."""
    for factor in _JPEG_FACTORS:
        if -(-width // factor) * -(-height // factor) <= max_pixels:
            return factor
    return None


def check_image_pixels(data: bytes, *, index: int, max_pixels: int, jpeg_draft: bool = False) -> int:
    """The pixel count a decode of ``data`` makes (from its header); ``InvalidInput`` if over ``max_pixels``.

    ``jpeg_draft``: the runtime decodes a JPEG over the limit at a reduced DCT scale
    (``jpeg_reduction``), so such a JPEG passes with the reduced count. Data that is not an image
    passes (0): the runtime's own check names that problem.
    """
    from PIL import Image

    size = _jpeg_or_png_size(data)
    if size is not None and size[0] * size[1] <= max_pixels:
        return size[0] * size[1]  # the common case, read without Pillow; anything else as before
    try:
        with open_image(data) as image:
            width, height = image.size
            is_jpeg = image.format == "JPEG"
    except Image.DecompressionBombError:
        raise _too_many(f"more than {PILLOW_MAX_PIXELS}", max_pixels, index=index) from None
    except (OSError, SyntaxError, ValueError, struct.error):
        return 0
    if width * height > max_pixels:
        factor = jpeg_reduction(width, height, max_pixels=max_pixels) if jpeg_draft and is_jpeg else None
        if factor is None:
            raise _too_many(f"{width}x{height} = {width * height}", max_pixels, index=index)
        return int(-(-width // factor) * -(-height // factor))
    return int(width * height)


# JPEG markers that carry a frame's size (SOF0-SOF15 less DHT, JPG and DAC), and those without a
# length field (TEM, RST0-RST7).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_BARE = frozenset({0x01, *range(0xD0, 0xD8)})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _jpeg_or_png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header or a PNG's IHDR, read as Pillow reads them; None
    for anything else or anything unusual (the caller then asks Pillow). Every image the server
    takes has its header parsed on the event loop, and Pillow's ``Image.open`` took about 50 us of
    the few hundred a request costs there; this takes a few."""
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return (width, height) if width and height else None
    if data[:2] != b"\xff\xd8":
        return None
    size = None
    at = 2
    while at + 4 <= len(data):  # the segments before the first scan, as Pillow's JPEG plugin walks them
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_BARE:
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if length < 2:
            return None
        if marker == 0xDA:  # start of scan: the header is complete
            return size
        if marker in _JPEG_SOF:
            if length < 8 or at + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            size = (width, height) if width and height else None
            if size is None:
                return None
        at += 2 + length
    return None


def check_image_header(data: bytes, *, index: int, formats: Collection[str]) -> None:
    """``InvalidInput`` unless ``data`` is an image in one of ``formats`` (Pillow's format names)."""
    from PIL import Image

    if not data:
        raise InvalidInput("empty image", index=index)
    try:
        with open_image(data) as image:
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
