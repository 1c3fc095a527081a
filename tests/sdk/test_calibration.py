"""The calibration photos of format="auto" and the benchmark photos never overlap."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fpgaserve.sdk.calibration
from fpgaserve.sdk.calibration import (
    BENCHMARK_PHOTOS,
    CALIBRATION_PHOTOS,
    SHIPPED_PHOTOS,
    calibration_photos,
    load_images,
    variants,
)
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
    assert not (set(CALIBRATION_PHOTOS) | set(SHIPPED_PHOTOS)) & set(BENCHMARK_PHOTOS)
    images = calibration_photos()
    bench = bench_module().photo_set()
    assert len(images) == 78 and all(i.dtype == np.uint8 and i.ndim == 3 and i.shape[2] == 3 for i in images)
    assert len(bench) == 9 * len(BENCHMARK_PHOTOS)  # each benchmark photo with its 8 variants
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


def test_auto_candidates_are_validated_named_and_checked_against_a_kept_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fpgaserve.compiler.precision import DEFAULT_CANDIDATES
    from fpgaserve.npu.program import save_program
    from tests.npu.test_program import sample_program

    pairs = QuantizedEfficientNetLite0(
        tmp_path, format="auto", candidates="msfp16,int12-bfp/msfp16,int12-bfp"
    )
    default = QuantizedEfficientNetLite0(tmp_path, format="auto")
    assert pairs.program_path != default.program_path and pairs.fmt == default.fmt
    assert [c.name for c in pairs.candidates or ()] == ["msfp16", "int12-bfp/msfp16", "int12-bfp"]
    with pytest.raises(ValueError, match="unknown BFP format 'bogus'"):
        QuantizedEfficientNetLite0(tmp_path, format="auto", candidates="msfp16/bogus,int12-bfp")
    with pytest.raises(ValueError, match="format='auto'"):
        QuantizedEfficientNetLite0(tmp_path, candidates="msfp16")
    # A kept program is reused only when it was searched among the same candidates (the defaults
    # changed when the pairs came: a program searched without them is searched again).
    searched = []
    monkeypatch.setattr(type(default), "_compile_auto", lambda self, metadata: searched.append(1) or kept)
    for names, reused in (([c.name for c in DEFAULT_CANDIDATES], True), (["msfp16", "int12-bfp"], False)):
        kept = sample_program()
        kept.fmt = default.fmt
        kept.metadata["precision"] = {"budget": default.budget, "candidates": names}
        default.program_path.parent.mkdir(parents=True, exist_ok=True)
        save_program(kept, default.program_path)
        searched.clear()
        fresh = QuantizedEfficientNetLite0(tmp_path, format="auto")
        assert fresh.program.metadata["precision"]["candidates"] == names
        assert searched == ([] if reused else [1])


def test_bias_correction_is_named_kept_apart_and_checked_against_a_kept_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fpgaserve.npu.program import save_program
    from tests.npu.test_program import sample_program

    plain = QuantizedEfficientNetLite0(tmp_path, format="msfp16")
    corrected = QuantizedEfficientNetLite0(tmp_path, format="msfp16", bias_correction=True)
    auto = QuantizedEfficientNetLite0(tmp_path, format="auto", bias_correction=True)
    assert corrected.format_name == "msfp16-bc" and auto.format_name.endswith("-bc")
    assert len({plain.program_path, corrected.program_path, auto.program_path}) == 3
    # A kept program is reused only when it was corrected as asked (its metadata says so).
    compiled = []
    monkeypatch.setattr(
        "fpgaserve.compiler.compile.compile_keras", lambda *a, **k: compiled.append(k) or sample_program()
    )
    kept = sample_program()
    kept.fmt = corrected.fmt
    corrected.program_path.parent.mkdir(parents=True, exist_ok=True)
    save_program(kept, corrected.program_path)  # not corrected: compiled again, with correction
    monkeypatch.setattr(type(corrected), "_calibration", lambda self: np.zeros((1, 224, 224, 3), np.float32))
    assert QuantizedEfficientNetLite0(tmp_path, format="msfp16", bias_correction=True).program is not None
    assert [k["bias_correction"] for k in compiled] == [True]


def test_shipped_photos_are_real_photos_with_their_licences_and_give_nine_variants_each() -> None:
    import skimage.io

    folder = Path(fpgaserve.sdk.calibration.__file__).parent / "photos"
    notes = (folder / "README.txt").read_text()
    assert "Creative Commons Attribution 2.0" in notes and "public domain" in notes
    for name in SHIPPED_PHOTOS:
        assert name in notes  # every shipped photo has its source and licence
        img = skimage.io.imread(folder / name)
        assert img.dtype == np.uint8 and img.ndim == 3 and min(img.shape[:2]) >= 400
        out = variants(img)
        assert len(out) == 9 and np.array_equal(out[0], img) and np.array_equal(out[1], img[:, ::-1])
        h, w = img.shape[:2]
        assert all(v.shape[:2] == (int(h * 0.7), int(w * 0.7)) for v in out[2:7])  # five crops
        assert out[7].shape[0] == round(h / 2) and out[8].shape[0] == round(h * 0.75)  # two scales
