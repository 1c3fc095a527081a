"""Calibration photos for the precision search, kept apart from the benchmark photos.

Role: the zoo's default calibration set for ``format="auto"`` (and ``fpgaserve compile
--accuracy-budget`` without ``--calibration``), and the single list of the photos bench/fpga.py
measures on, so that a test can check the two never share a photo. The benchmark's come from
scikit-image's bundled files; the calibration set is scikit-image's other real photos plus three
freely licensed photos shipped in ``fpgaserve/sdk/photos`` (licences in its README.txt), each with
the same kind of variants the benchmark scores (flip, crops, scales). All offline. Also reads a
user's calibration images from files or a folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "BENCHMARK_PHOTOS",
    "CALIBRATION_PHOTOS",
    "SHIPPED_PHOTOS",
    "calibration_photos",
    "load_images",
    "variants",
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
# Shipped with fpgaserve (fpgaserve/sdk/photos; README.txt there gives source and licence): a Chinese
# temple and a flower (scikit-learn's sample images, CC BY 2.0) and Grace Hopper (U.S. Navy, public
# domain; matplotlib's sample photo). Scenes with ImageNet objects, unlike scikit-image's leftovers.
SHIPPED_PHOTOS = ("china.jpg", "flower.jpg", "grace_hopper.jpg")
_FACES = 20  # of the 200 LFW faces, every tenth
_VIDEO_FRAMES = (0, 8, 16, 23)
_CROP = 0.7  # the side of the five crops, relative to the photo's
_SCALES = (0.5, 0.75)


def _rgb(img: npt.NDArray[np.generic]) -> U8:
    from skimage.util import img_as_ubyte

    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = img_as_ubyte(np.clip(arr, 0.0, 1.0))  # type: ignore[no-untyped-call]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


def variants(img: U8) -> list[U8]:
    """A photo and 8 variants, as bench/fpga.py scores its own: mirror image, five crops of 70 %
    (corners and centre), and scales of 1/2 and 3/4 (anti-aliased). Crops and near-ties are where a
    format's small errors flip answers, so the calibration set needs them as much as the benchmark."""
    from skimage.transform import rescale
    from skimage.util import img_as_ubyte

    h, w = img.shape[:2]
    ch, cw = int(h * _CROP), int(w * _CROP)
    crops = [img[:ch, :cw], img[:ch, -cw:], img[-ch:, :cw], img[-ch:, -cw:],
             img[(h - ch) // 2 : (h + ch) // 2, (w - cw) // 2 : (w + cw) // 2]]  # fmt: skip
    scales = [
        img_as_ubyte(rescale(img, s, channel_axis=-1, anti_aliasing=True))  # type: ignore[no-untyped-call]
        for s in _SCALES
    ]
    return [np.ascontiguousarray(v) for v in (img, img[:, ::-1], *crops, *scales)]


def calibration_photos() -> list[U8]:
    """The default calibration set: 78 uint8 RGB images, none of them from ``BENCHMARK_PHOTOS``.

    Six photos with their variants (54: scikit-image's clock, cell and retina detail, and the three
    shipped photos), four video frames and 20 faces (as they are: thumbnails of 25 x 25 pixels)."""
    import skimage.data
    import skimage.io

    folder = Path(os.path.dirname(skimage.data.__file__))
    shipped = Path(__file__).resolve().parent / "photos"
    images: list[U8] = []
    for path in [*(folder / n for n in CALIBRATION_PHOTOS[:3]), *(shipped / n for n in SHIPPED_PHOTOS)]:
        images += variants(_rgb(skimage.io.imread(path)))
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
