"""The pixel-limit check reads JPEG and PNG headers without Pillow: the same sizes Pillow reads."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fpgaserve.runtime.images import check_image_pixels, open_image
from fpgaserve.runtime.protocol import InvalidInput


def _encoded(mode: str, size: tuple[int, int], fmt: str, **options: object) -> bytes:
    rng = np.random.default_rng(sum(size))
    channels = {"L": 1, "RGB": 3, "CMYK": 4, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated; the header's size is still the stored one
    return exif.tobytes()


IMAGES = {
    "baseline JPEG": _encoded("RGB", (451, 300), "JPEG"),
    "progressive JPEG": _encoded("RGB", (64, 97), "JPEG", progressive=True),
    "grayscale JPEG": _encoded("L", (33, 17), "JPEG"),
    "CMYK JPEG": _encoded("CMYK", (40, 30), "JPEG"),
    "JPEG with EXIF and an ICC profile": _encoded(
        "RGB", (120, 80), "JPEG", exif=_exif(), icc_profile=b"x" * 300
    ),
    "optimized JPEG, restart markers": _encoded(
        "RGB", (200, 150), "JPEG", optimize=True, restart_marker_rows=1
    ),
    "RGB PNG": _encoded("RGB", (451, 300), "PNG"),
    "RGBA PNG": _encoded("RGBA", (7, 5), "PNG"),
    "grayscale PNG": _encoded("L", (1, 1000), "PNG"),
}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_the_pixel_count_is_pillows(name: str) -> None:
    data = IMAGES[name]
    with open_image(data) as image:
        width, height = image.size
    assert check_image_pixels(data, index=0, max_pixels=10**8) == width * height


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_an_image_over_the_limit_is_refused_with_pillows_size(name: str) -> None:
    data = IMAGES[name]
    with open_image(data) as image:
        width, height = image.size
    with pytest.raises(InvalidInput, match=f"{width}x{height} = {width * height}"):
        check_image_pixels(data, index=2, max_pixels=width * height - 1)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",  # a JPEG's start and nothing else
        IMAGES["baseline JPEG"][:40],  # cut inside its header
        b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x00" + b"\x00" * 20,  # a frame of no pixels
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 8,  # a PNG without its IHDR
        b"GIF89a" + b"\x00" * 20,
        b"not an image at all",
    ],
)
def test_data_that_is_not_a_readable_jpeg_or_png_header_passes_to_the_runtimes_own_check(data: bytes) -> None:
    # Pillow decides, as before: what it cannot open passes with 0 pixels (the runtime names it).
    try:
        with open_image(data) as image:
            expected = image.size[0] * image.size[1]
    except Exception:
        expected = 0
    assert check_image_pixels(data, index=0, max_pixels=10**8) == expected
