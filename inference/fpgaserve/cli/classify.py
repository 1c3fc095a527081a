"""``fpgaserve classify``: classify an image offline, in-process, on an emulated FPGA.

Role: the no-server way to run a zoo pipeline: preprocess -> featurizer program on an emulated
device -> float classifier, printing the top-5 labels, their confidences, and the modeled device
time beside the wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from fpgaserve.api.errors import UserError
from fpgaserve.cli.options import add_format_option, add_model_path_option, wants_auto
from fpgaserve.cli.output import print_top

__all__ = ["add_parser", "classify"]

DESCRIPTION = """\
Run a zoo pipeline (preprocess -> FPGA featurizer -> classifier) on one image and print the top-5
ImageNet labels with confidences and the modeled device time.
"""

EPILOG = """\
examples:
  fpgaserve classify sample:chelsea
  fpgaserve classify cat.jpg --format msfp16 --top 3
  fpgaserve classify cat.jpg --device-model pbs-a10 --json
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "classify",
        help="classify an image on an emulated FPGA, in-process (no server)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "image", help="a JPEG/PNG file, or 'sample:NAME' for a scikit-image photo (e.g. sample:chelsea)"
    )
    p.add_argument(
        "--model",
        default="efficientnet-lite0",
        help="zoo model: efficientnet-lite0 or resnet50 (default: %(default)s)",
    )
    p.add_argument("--weights", default=None, help="'imagenet' (default), 'random', or a weights file")
    add_format_option(p)
    p.add_argument(
        "--device-model",
        default="pbs-s10",
        help="emulated device model: pbs-s10, pbs-a10 or pbs-tiny (default: %(default)s)",
    )
    add_model_path_option(p)
    p.add_argument("--top", type=int, default=5, help="how many labels to print (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_run)


def load_image(spec: str) -> Any:
    """Decode an image file (or ``sample:NAME``) to a uint8 RGB array."""
    import numpy as np

    if spec.startswith("sample:"):
        import skimage.data

        name = spec.removeprefix("sample:")
        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise UserError(
                f"scikit-image has no sample photo {name!r} (try chelsea, coffee, astronaut, rocket)"
            )
        image = loader()
    else:
        path = Path(spec)
        if not path.is_file():
            raise UserError(f"{spec}: no such file")
        import skimage.io

        try:
            image = skimage.io.imread(path)
        except Exception as exc:  # decoders raise many types for a bad file
            raise UserError(f"{spec}: not a readable image ({exc})") from exc
    from skimage.util import img_as_ubyte

    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise UserError(f"{spec}: expected an RGB image, got shape {image.shape}")
    return img_as_ubyte(image[..., :3])  # type: ignore[no-untyped-call]


def _progress(message: str, *, quiet: bool) -> None:
    if not quiet:
        print(f"... {message}", file=sys.stderr, flush=True)


def classify(args: argparse.Namespace) -> dict[str, Any]:
    image = load_image(args.image)
    quiet = bool(args.json)
    import fpgaserve.npu  # noqa: F401  (threading defaults before numpy starts its pools)
    from fpgaserve.npu.bfp import get_format
    from fpgaserve.npu.device import EmulatedDevice, get_device_model
    from fpgaserve.npu.executor import Executor
    from fpgaserve.npu.formats import AUTO_FORMAT
    from fpgaserve.sdk.labels import imagenet_labels
    from fpgaserve.sdk.zoo import WeightsUnavailableError, get_zoo_model

    try:
        auto = wants_auto(args)
        fmt = AUTO_FORMAT if auto else get_format(args.fmt)
        budget = {"budget": args.budget} if args.budget else {}
        device = EmulatedDevice(get_device_model(args.device_model))
        model = get_zoo_model(
            args.model, model_path=args.model_path, weights=args.weights, format=fmt, **budget
        )
        _progress(
            f"building {model.name} ({model.weights} weights) and its {model.format_name} program"
            + (" (the precision search takes minutes the first time)" if auto else ""),
            quiet=quiet,
        )
        program = model.program
        classifier = model.classifier
    except (ValueError, WeightsUnavailableError) as exc:
        raise UserError(str(exc)) from exc
    _progress(f"running on emulated device {device.device_id} ({device.model.name})", quiet=quiet)
    batch = model.preprocess(image)
    with Executor(program, device=device) as executor:
        executor.run(batch)  # warm-up: JIT kernels and caches, so the timing below is steady-state
        result = executor.run(batch)
    start = time.perf_counter()
    probs = classifier(result.outputs).numpy()[0]
    classifier_seconds = time.perf_counter() - start
    labels = imagenet_labels()
    top = probs.argsort()[::-1][: args.top]
    return {
        "image": args.image,
        "model": model.name,
        "format": model.format_name,
        "device": {"id": device.device_id, "model": device.model.name},
        "top": [{"index": int(i), "label": labels[i], "confidence": round(float(probs[i]), 6)} for i in top],
        "deviceSeconds": result.device_seconds,
        "featurizerWallSeconds": result.wall_seconds,
        "classifierWallSeconds": classifier_seconds,
    }


def _run(args: argparse.Namespace) -> int:
    report = classify(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['image']}: {report['model']} on {report['device']['model']} ({report['format']})")
    print_top(report["top"])
    print(
        f"featurizer: modeled device time {report['deviceSeconds'] * 1e3:.3f} ms, "
        f"emulation wall time {report['featurizerWallSeconds'] * 1e3:.1f} ms"
    )
    return 0
