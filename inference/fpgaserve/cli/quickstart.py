"""``fpgaserve quickstart``: the whole workflow on a laptop, no cluster.

Role: build an EfficientNet-Lite0 pipeline with its real weights (preprocess -> FPGA featurizer ->
classifier), save it as a service definition, serve it locally over HTTPS with a generated key,
score a real photo, print the top-5 labels, and clean up after itself.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from fpgaserve.api.errors import UserError
from fpgaserve.cli.options import add_format_option, add_model_path_option, wants_auto
from fpgaserve.cli.output import SEARCH_NOTE, print_top, progress

__all__ = ["add_parser", "quickstart"]

DESCRIPTION = """\
Build an EfficientNet-Lite0 pipeline with its real ImageNet weights, save it as a service
definition, serve it on this machine over HTTPS with a generated key, score a photo and print the
top-5 labels. Everything it creates is removed at the end, but for what it caches for the next run:
the compiled program (--model-path) and the emulator's compiled kernels (numba's cache). The first
run compiles those kernels, which takes a minute or two; later runs take seconds.
"""

EPILOG = """\
examples:
  fpgaserve quickstart
  fpgaserve quickstart --image cat.jpg --format msfp16
  fpgaserve quickstart --json
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "quickstart",
        help="build, serve (HTTPS + key) and score a pipeline locally on an emulated FPGA",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--image",
        default="sample:chelsea",
        help="a JPEG/PNG file, or sample:NAME for a scikit-image photo (default: %(default)s)",
    )
    add_format_option(p, what="BFP format of the featurizer")
    add_model_path_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_run)


def quickstart(args: argparse.Namespace) -> dict[str, Any]:
    from fpgaserve.cli.classify import load_image

    quiet = bool(args.json)
    image = load_image(args.image)  # fail on a bad image before the long work
    import imageio.v3 as iio

    import fpgaserve.npu  # noqa: F401  (threading defaults before numpy starts its pools)
    from fpgaserve.npu.bfp import BfpFormat, get_format
    from fpgaserve.npu.formats import AUTO_FORMAT
    from fpgaserve.sdk.local import LocalWebservice
    from fpgaserve.sdk.pipeline import zoo_pipeline
    from fpgaserve.sdk.zoo import QuantizedEfficientNetLite0

    try:
        fmt: BfpFormat | str = AUTO_FORMAT if wants_auto(args) else get_format(args.fmt)
        budget = {"budget": args.budget} if args.budget else {}
        model = QuantizedEfficientNetLite0(args.model_path, format=fmt, **budget)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    encoded = iio.imwrite("<bytes>", image, extension=".png")  # what a client would upload
    with tempfile.TemporaryDirectory(prefix="fpgaserve-quickstart-") as work:
        started = progress(
            "building the pipeline: preprocess -> EfficientNet-Lite0 on the FPGA -> classifier"
            + (f" ({SEARCH_NOTE})" if model.auto and not model.program_cached else ""),
            quiet=quiet,
        )
        info = zoo_pipeline(model).save(Path(work) / "service_def.zip")
        build_s = time.perf_counter() - started
        started = progress(
            f"serving {info.path.name} ({info.size / 2**20:.1f} MiB) over HTTPS with a generated key",
            quiet=quiet,
        )
        from fpgaserve.npu.precompile import COMPILING

        def server_says(line: str) -> None:  # its log is a file: pass on what explains a long wait
            if COMPILING in line:
                progress(f"the server is {COMPILING}", quiet=quiet)

        with LocalWebservice.deploy(info.path, name="quickstart", progress=server_says) as service:
            deploy_s = time.perf_counter() - started
            started = progress(f"scoring {args.image} at {service.scoring_uri}", quiet=quiet)
            answer = service.score(encoded)
            score_s = time.perf_counter() - started
            uri = service.scoring_uri
    result = answer["results"][0]
    return {
        "image": args.image,
        "model": answer.get("model"),
        "format": model.format_name,
        "scoringUri": uri,
        "packageSha256": info.sha256,
        "top": [
            {"label": t["label"], "index": t["index"], "confidence": t["probability"]}
            for t in result.get("top5", [])
        ],
        "deviceSeconds": answer.get("deviceSeconds"),
        "seconds": {"build": round(build_s, 2), "deploy": round(deploy_s, 2), "score": round(score_s, 3)},
    }


def _run(args: argparse.Namespace) -> int:
    report = quickstart(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['image']}: {report['model']} ({report['format']}) served at {report['scoringUri']}")
    print_top(report["top"])
    seconds = report["seconds"]
    print(
        f"modeled FPGA time {report['deviceSeconds'] * 1e3:.3f} ms; build {seconds['build']} s, "
        f"deploy {seconds['deploy']} s, score {seconds['score']} s "
        "(cleaned up; the compiled program and kernels stay cached)"
    )
    return 0
