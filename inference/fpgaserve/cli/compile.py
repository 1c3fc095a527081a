"""``fpgaserve compile``: compile a Keras featurizer into a device program file.

With ``--format auto`` or ``--accuracy-budget``, the per-layer formats are searched for against the
float model on calibration images (``fpgaserve.compiler.precision``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, cast

from fpgaserve.api.errors import UserError
from fpgaserve.cli.options import add_format_option, wants_auto
from fpgaserve.npu.formats import FEATURE_BUDGET

__all__ = ["add_parser"]

DESCRIPTION = """\
Compile a Keras featurizer made of supported layers (Conv2D, DepthwiseConv2D, Dense,
BatchNormalization, ReLU/ReLU6, Add, pooling, padding, reshape) into a BFP device program.
"""

EPILOG = """\
examples:
  fpgaserve compile featurizer.keras -o featurizer.fpga
  fpgaserve compile featurizer.keras -o featurizer.fpga --format msfp16
  fpgaserve compile featurizer.keras -o featurizer.fpga --format auto --accuracy-budget 'cosine>=0.999' --calibration photos/
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compile",
        help="compile a Keras featurizer (.keras) into a device program (.fpga)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="a Keras model file (.keras or .h5)")
    p.add_argument("-o", "--output", required=True, help="where to write the program (.fpga)")
    add_format_option(p, default_budget=FEATURE_BUDGET)
    p.add_argument(
        "--rounding", choices=("nearest", "even", "zero"), default=None, help="override the rounding"
    )
    p.add_argument("--input-shape", default=None, help="H,W,C when the model's input shape is not fixed")
    p.add_argument(
        "--calibration",
        nargs="+",
        default=None,
        metavar="PATH",
        help="with --format auto: calibration images (files or folders of .jpg/.png, centre-cropped and "
        "resized to the input, RGB 0-255), or one .npy batch already preprocessed for the model "
        "(default: the zoo's calibration photos, as RGB 0-255)",
    )
    p.add_argument(
        "--candidates",
        default=None,
        help="with --format auto: comma-separated formats to choose from, narrowest first, the widest "
        "last; WEIGHTS/ACTIVATIONS for weights and input activations in two formats, e.g. "
        "'msfp16,int12-bfp/msfp16,int12-bfp' (default: all presets, narrowest to int12-bfp, and "
        "int12-bfp/msfp16 just below int12-bfp)",
    )
    p.add_argument(
        "--bias-correction",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="correct each matrix op's bias for the mean shift quantization adds to its channels on the "
        "calibration images (no device time, no weight memory; with --format auto every variant the "
        "search scores is corrected). Default: off (on EfficientNet-Lite0 it did not generalise from "
        "the calibration photos to the benchmark's; docs/numerics.md)",
    )
    p.add_argument(
        "--adapt-weights",
        choices=("permute", "refit", "permute+refit"),
        default=None,
        help="adapt the weights to the formats on the calibration images (no device time, no weight "
        "memory): permute = sort the channels of each inverted-residual block and residual stream by "
        "magnitude so that BFP blocks hold like values (exact; before any search); refit = refit each "
        "conv/dense op's weights and bias to its quantized inputs once the formats are fixed; or both. "
        "Default: off (docs/numerics.md, 'Weight adaptation')",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    shape = tuple(int(d) for d in args.input_shape.split(",")) if args.input_shape else None
    import fpgaserve.npu  # noqa: F401  (threading defaults before numpy starts its pools)
    from fpgaserve.npu.bfp import get_format
    from fpgaserve.npu.program import save_program

    auto = wants_auto(args)
    try:
        fmt = get_format("int12-bfp" if auto else args.fmt)
        fmt = fmt.with_rounding(args.rounding) if args.rounding else fmt
        search: dict[str, Any] = {}
        if auto:
            search = _search_options(args, rounding=args.rounding)
        elif args.candidates:
            raise ValueError("--candidates go with --format auto or --accuracy-budget")
        elif args.calibration and not (args.bias_correction or args.adapt_weights is not None):
            raise ValueError(
                "--calibration goes with --format auto, --accuracy-budget, --bias-correction or --adapt-weights"
            )
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    import keras

    from fpgaserve.compiler.compile import compile_keras
    from fpgaserve.compiler.keras_import import UnsupportedLayerError

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for unreadable files
        raise UserError(f"{path}: cannot load the Keras model ({exc})") from exc
    try:
        if auto:
            search["fmt"] = search["candidates"][-1].weights
            search["calibration"] = _calibration(args.calibration, model=model, input_shape=shape)
        else:
            search["fmt"] = fmt
            if args.bias_correction or args.adapt_weights is not None:
                search["calibration"] = _calibration(args.calibration, model=model, input_shape=shape)
        program = compile_keras(
            model, input_shape=shape, bias_correction=args.bias_correction, adapt=args.adapt_weights, **search
        )
    except (UnsupportedLayerError, ValueError) as exc:  # BudgetError too: it names the limiting layers
        raise UserError(str(exc)) from exc
    digest = save_program(program, args.output)
    summary = program.summary()
    for key in ("precision", "biasCorrection", "weightAdaptation"):
        if key in program.metadata:
            summary[key] = program.metadata[key]
    print(json.dumps({**summary, "path": args.output, "sha256": digest}, indent=2))
    return 0


def _search_options(args: argparse.Namespace, *, rounding: str | None) -> dict[str, Any]:
    from fpgaserve.compiler.precision import DEFAULT_CANDIDATES, AccuracyBudget
    from fpgaserve.npu.formats import Rounding, parse_candidates

    candidates = parse_candidates(args.candidates) if args.candidates else DEFAULT_CANDIDATES
    if rounding:
        candidates = tuple(f.with_rounding(cast("Rounding", rounding)) for f in candidates)
    return {"budget": AccuracyBudget.parse(args.budget or FEATURE_BUDGET), "candidates": candidates}


def _calibration(paths: list[str] | None, *, model: Any, input_shape: tuple[int, ...] | None) -> Any:
    """The calibration batch: a preprocessed .npy, or images resized to the model's input (RGB 0-255)."""
    import numpy as np

    from fpgaserve.sdk.calibration import calibration_photos, load_images
    from fpgaserve.sdk.imageproc import center_crop_resize

    if paths and len(paths) == 1 and paths[0].endswith(".npy"):
        try:
            return np.load(paths[0], allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{paths[0]}: not a readable .npy batch ({exc})") from exc
    shape = input_shape or tuple(model.input_shape[1:])
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3 or shape[0] is None:
        raise ValueError(
            f"the model takes input of shape {shape}, not square RGB images: give --calibration a "
            "preprocessed .npy batch"
        )
    try:
        images = load_images(paths) if paths else calibration_photos()
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from exc
    return np.concatenate([center_crop_resize(img, size=int(shape[0])) for img in images])
