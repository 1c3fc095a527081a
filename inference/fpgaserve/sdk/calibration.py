"""Calibration photos for the precision search, kept apart from the benchmark photos.

Role: the zoo's default calibration set for ``format="auto"`` (and ``fpgaserve compile
--accuracy-budget`` without ``--calibration``), and the single list of the photos bench/fpga.py
measures on, so that a test can check the two never share a photo. Both come from scikit-image's
bundled files (offline). Also reads a user's calibration images from files or a folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "BENCHMARK_PHOTOS",
    "CALIBRATION_PHOTOS",
    "calibration_photos",
    "load_images",
]

U8 = npt.NDArray[np.uint8]

# Real photos bundled with scikit-image that bench/fpga.py scores on (with crops, flips and scales).
BENCHMARK_PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
    "camera.png", "coins.png", "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "moon.png", "brick.png",
    "grass.png", "gravel.png", "page.png", "text.png",
)  # fmt: skip
# The other real photos scikit-image bundles (synthetic images left out): a motion-blurred clock, a
# microscope cell, a retina detail, frames of a short video, and faces from Labeled Faces in the Wild.
CALIBRATION_PHOTOS = (
    "clock_motion.png", "cell.png", "microaneurysms.png", "no_time_for_that_tiny.gif", "lfw_subset.npy",
)  # fmt: skip
_FACES = 20  # of the 200 LFW faces, every tenth
_VIDEO_FRAMES = (0, 8, 16, 23)


def _rgb(img: npt.NDArray[np.generic]) -> U8:
    from skimage.util import img_as_ubyte

    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = img_as_ubyte(np.clip(arr, 0.0, 1.0))  # type: ignore[no-untyped-call]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


def calibration_photos() -> list[U8]:
    """The default calibration set: 30 uint8 RGB photos, none of them in ``BENCHMARK_PHOTOS``."""
    import skimage.data
    import skimage.io

    folder = Path(os.path.dirname(skimage.data.__file__))
    images: list[U8] = []
    for name in CALIBRATION_PHOTOS[:3]:
        img = _rgb(skimage.io.imread(folder / name))
        images += [img, np.ascontiguousarray(img[:, ::-1])]
    frames = skimage.io.imread(folder / "no_time_for_that_tiny.gif")
    images += [_rgb(frames[i]) for i in _VIDEO_FRAMES]
    faces = np.load(folder / "lfw_subset.npy", allow_pickle=False)
    images += [_rgb(faces[i]) for i in range(0, len(faces), len(faces) // _FACES)][:_FACES]
    return images


def load_images(paths: list[str]) -> list[U8]:
    """Images from files and folders (a folder: its .jpg/.jpeg/.png files, sorted by name)."""
    import skimage.io

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    if not files:
        raise ValueError(f"no .jpg/.jpeg/.png images in {', '.join(paths)}")
    images = []
    for f in files:
        try:
            images.append(_rgb(skimage.io.imread(f)))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{f}: not a readable image ({exc})") from exc
    return images
