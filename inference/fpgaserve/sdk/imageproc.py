"""Image decoding-free preprocessing shared by the zoo models (numpy only).

Role: the centre crop + bicubic resize that the zoo models were evaluated with, reproducing
TensorFlow's ``tf.image.resize(method="bicubic")`` (half-pixel centres, Keys a=-0.5, no antialias),
so numpy preprocessing and the TensorFlow preprocessing stage agree to float rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["center_crop_resize"]


def center_crop_resize(
    images: npt.ArrayLike, *, size: int, crop_padding: int = 32
) -> npt.NDArray[np.float32]:
    """Crop the central ``size / (size + crop_padding)`` square and resize it to ``size`` x ``size``.

    Takes uint8 RGB ``(H, W, 3)`` or ``(N, H, W, 3)``; returns float32 ``(N, size, size, 3)`` in [0, 255].
    """
    batch = _as_uint8_batch(np.asarray(images))
    _, height, width, _ = batch.shape
    crop, top, left = _crop_window(height, width, size=size, crop_padding=crop_padding)
    window = batch[:, top : top + crop, left : left + crop].astype(np.float32)
    weights = _bicubic_matrix(crop, size)
    # Separable resize: rows, then columns.
    resized = np.einsum("oh,nhwc->nowc", weights, window, optimize=True)
    out: npt.NDArray[np.float32] = np.einsum("pw,nowc->nopc", weights, resized, optimize=True).astype(
        np.float32
    )
    return out


def _as_uint8_batch(images: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    if images.dtype != np.uint8:
        raise TypeError(
            f"expected uint8 RGB images, got {images.dtype}; convert with skimage.util.img_as_ubyte"
        )
    if images.ndim == 3:
        images = images[np.newaxis]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) or (N, H, W, 3) RGB images, got shape {images.shape}")
    return images


def _crop_window(height: int, width: int, *, size: int, crop_padding: int) -> tuple[int, int, int]:
    crop = int(size / (size + crop_padding) * min(height, width))
    if crop < 1:
        raise ValueError(f"image of {height}x{width} is too small to crop")
    return crop, (height - crop + 1) // 2, (width - crop + 1) // 2


def _bicubic_matrix(in_size: int, out_size: int) -> npt.NDArray[np.float32]:
    """``(out_size, in_size)`` matrix of TF's bicubic resize (half-pixel centres, Keys a=-0.5, no antialias).

    Like TensorFlow, taps falling outside the image get weight 0 and the rest are renormalised.
    """
    centres = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    base = np.floor(centres)
    offsets = np.arange(-1, 3)
    taps = base[:, None].astype(np.int64) + offsets
    distance = np.abs(centres[:, None] - base[:, None] - offsets)
    a = -0.5
    near = ((a + 2) * distance - (a + 3)) * distance**2 + 1
    far = ((a * distance - 5 * a) * distance + 8 * a) * distance - 4 * a
    weights = np.where(distance <= 1, near, np.where(distance < 2, far, 0.0))
    weights = np.where((taps >= 0) & (taps < in_size), weights, 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    matrix = np.zeros((out_size, in_size))
    rows = np.repeat(np.arange(out_size), len(offsets))
    np.add.at(matrix, (rows, np.clip(taps, 0, in_size - 1).ravel()), weights.ravel())
    return matrix.astype(np.float32)
