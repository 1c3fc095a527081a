"""The calibration photos of format="auto" and the benchmark photos never overlap."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fpgaserve.sdk.calibration import BENCHMARK_PHOTOS, CALIBRATION_PHOTOS, calibration_photos, load_images
from fpgaserve.sdk.zoo import QuantizedEfficientNetLite0

ROOT = Path(__file__).resolve().parents[2]


def bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_fpga", ROOT / "bench" / "fpga.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_fpga", module)
    spec.loader.exec_module(module)
    return module


def test_calibration_and_benchmark_photos_are_disjoint_real_photos() -> None:
    assert bench_module().PHOTOS == BENCHMARK_PHOTOS  # the benchmark scores on exactly these
    assert not set(CALIBRATION_PHOTOS) & set(BENCHMARK_PHOTOS)
    images = calibration_photos()
    bench = bench_module().photo_set()
    assert len(images) == 30 and all(i.dtype == np.uint8 and i.ndim == 3 and i.shape[2] == 3 for i in images)
    # No calibration image is (a crop, flip or scale of) a benchmark photo: compare every pair of
    # equal shape, and the calibration images' sizes never occur among the benchmark's.
    bench_shapes = {b.shape for b in bench}
    for img in images:
        if img.shape in bench_shapes:
            assert not any(np.array_equal(img, b) for b in bench if b.shape == img.shape)


def test_calibration_images_load_from_files_and_folders(tmp_path: Path) -> None:
    import skimage.io

    for i, img in enumerate(calibration_photos()[:3]):
        skimage.io.imsave(tmp_path / f"{i}.png", img, check_contrast=False)
    (tmp_path / "notes.txt").write_text("not an image")
    assert len(load_images([str(tmp_path)])) == 3
    assert len(load_images([str(tmp_path / "0.png"), str(tmp_path / "1.png")])) == 2
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_images([str(tmp_path / "missing.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no \.jpg"):
        load_images([str(tmp_path / "empty")])


def test_auto_format_names_its_budget_and_keeps_its_own_program_file(tmp_path: Path) -> None:
    auto = QuantizedEfficientNetLite0(tmp_path, format="auto")
    strict = QuantizedEfficientNetLite0(tmp_path, format="auto", budget="cosine>=0.9999")
    plain = QuantizedEfficientNetLite0(tmp_path)
    assert auto.auto and not plain.auto and auto.fmt == plain.fmt  # int12-bfp: the widest candidate
    assert auto.format_name.startswith("auto-") and "cosine>=0.9999" in strict.format_name
    assert len({auto.program_path, strict.program_path, plain.program_path}) == 3
    assert auto.version != plain.version
    with pytest.raises(ValueError, match="accuracy budget"):
        QuantizedEfficientNetLite0(tmp_path, format="auto", budget="best")
