"""``fpgaserve compile``: compile a Keras featurizer into a device program file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fpgaserve.api.errors import UserError
from fpgaserve.cli.options import add_format_option

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compile",
        help="compile a Keras featurizer (.keras) into a device program (.fpga)",
        description="Compile a Keras featurizer made of supported layers (Conv2D, DepthwiseConv2D, Dense, "
        "BatchNormalization, ReLU/ReLU6, Add, pooling, padding, reshape) into a BFP device program.",
    )
    p.add_argument("model", help="a Keras model file (.keras or .h5)")
    p.add_argument("-o", "--output", required=True, help="where to write the program (.fpga)")
    add_format_option(p)
    p.add_argument(
        "--rounding", choices=("nearest", "even", "zero"), default=None, help="override the rounding"
    )
    p.add_argument("--input-shape", default=None, help="H,W,C when the model's input shape is not fixed")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    path = Path(args.model)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    shape = tuple(int(d) for d in args.input_shape.split(",")) if args.input_shape else None
    import fpgaserve.npu  # noqa: F401  (threading defaults before numpy starts its pools)
    from fpgaserve.npu.bfp import get_format
    from fpgaserve.npu.program import save_program

    try:
        fmt = get_format(args.fmt)
        fmt = fmt.with_rounding(args.rounding) if args.rounding else fmt
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
        program = compile_keras(model, fmt=fmt, input_shape=shape)
    except (UnsupportedLayerError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    digest = save_program(program, args.output)
    print(json.dumps({**program.summary(), "path": args.output, "sha256": digest}, indent=2))
    return 0
