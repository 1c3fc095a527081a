"""``fpgaserve package``: build a zoo pipeline and save it as a service package, without Python.

Role: the command line of ``zoo_pipeline(model).save(path)``, the pipeline ``quickstart`` builds
(preprocess -> featurizer on the FPGA -> classifier, with ImageNet labels), written to a
``service_def.zip`` that ``fpgaserve serve`` runs and ``fpgaserve model register`` uploads. The
output is checked before the long work (a missing directory, a file in the way), and each long step
says what it does on stderr; stdout is the result (a table, or ``--json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from fpgaserve.api.errors import UserError
from fpgaserve.cli.options import add_format_option, add_model_path_option, wants_auto
from fpgaserve.cli.output import SEARCH_NOTE, progress

__all__ = ["add_parser", "package"]

MODELS = ("efficientnet-lite0", "resnet50")  # fpgaserve.sdk.zoo.ZOO's names (that module is heavy)

DESCRIPTION = """\
Build a zoo model's pipeline (preprocess -> featurizer on an emulated FPGA -> classifier, with
ImageNet labels) and save it as a service definition package (service_def.zip): what quickstart
builds and serves, kept. Serve it with 'fpgaserve serve', or register it on a cluster with
'fpgaserve model register'. The compiled program is cached in --model-path (shared with the
Python SDK), so a second package of the same model and format takes seconds.

Models: efficientnet-lite0 (real ImageNet weights, shipped: works offline) and resnet50 (Keras's
ImageNet weights: downloaded once with a network into ~/.keras/models, or --weights FILE).
"""

EPILOG = """\
examples:
  fpgaserve package efficientnet-lite0 -o service_def.zip
  fpgaserve package efficientnet-lite0 -o lite0-msfp16.zip --format msfp16
  fpgaserve package resnet50 --weights resnet50.weights.h5 -o resnet50.zip --json
then:
  fpgaserve serve service_def.zip --port 8080
  fpgaserve score http://127.0.0.1:8080 cat.jpg
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "package",
        help="build a zoo pipeline into a service package (service_def.zip) to serve or register",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", choices=MODELS, help=f"zoo model: {' or '.join(MODELS)}")
    p.add_argument(
        "-o", "--output", default="service_def.zip", help="the package file to write (default: %(default)s)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument(
        "--weights", default=None, help="'imagenet' (default), or a weights file of the same network"
    )
    add_format_option(p, what="BFP format of the featurizer")
    add_model_path_option(p)
    p.add_argument("--name", default=None, help="the model's name in the package (default: MODEL)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_run)


def _check_output(path: Path, *, overwrite: bool) -> None:
    """Refuse, before the long build, an output that cannot or should not be written."""
    if path.is_dir():
        raise UserError(
            f"-o {path}: is a directory; give the package's file name, e.g. {path / 'service_def.zip'}"
        )
    if path.exists() and not overwrite:
        raise UserError(f"-o {path}: already exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise UserError(f"-o {path}: directory {path.parent} does not exist")


def package(args: argparse.Namespace) -> dict[str, Any]:
    """Build and save the package; the report ``--json`` prints."""
    output = Path(args.output).expanduser()
    _check_output(output, overwrite=args.overwrite)
    quiet = bool(args.json)
    import fpgaserve.npu  # noqa: F401  (threading defaults before numpy starts its pools)
    from fpgaserve.npu.bfp import BfpFormat, get_format
    from fpgaserve.npu.formats import AUTO_FORMAT
    from fpgaserve.sdk.pipeline import zoo_pipeline
    from fpgaserve.sdk.zoo import WeightsUnavailableError, get_zoo_model

    started = time.perf_counter()
    try:
        fmt: BfpFormat | str = AUTO_FORMAT if wants_auto(args) else get_format(args.fmt)
        budget = {"budget": args.budget} if args.budget else {}
        model = get_zoo_model(
            args.model, model_path=args.model_path, weights=args.weights, format=fmt, **budget
        )
        progress(
            f"building {model.name} ({model.weights} weights) and its {model.format_name} program"
            + (f" ({SEARCH_NOTE})" if model.auto and not model.program_cached else ""),
            quiet=quiet,
        )
        program = model.program
        progress(f"writing {output}: preprocess -> {model.name} on the FPGA -> classifier", quiet=quiet)
        definition = zoo_pipeline(model, name=args.name)
        # Into a neighbour first: a failed write never leaves half a package under the real name.
        partial = output.with_name(f".{output.name}.partial")
        try:
            info = definition.save(partial)
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
    except WeightsUnavailableError as exc:
        raise UserError(f"{exc}; here: --weights FILE, or efficientnet-lite0 (its weights ship)") from exc
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    return {
        "path": str(output),
        "name": definition.name,
        "version": definition.version,
        "model": model.name,
        "format": model.format_name,
        "weightBytes": program.weight_bytes,
        "sizeBytes": info.size,
        "sha256": info.sha256,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _run(args: argparse.Namespace) -> int:
    report = package(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{report['path']}: {report['model']} ({report['format']}), {report['sizeBytes'] / 2**20:.1f} MiB, "
        f"sha256 {report['sha256']}, built in {report['seconds']} s"
    )
    print(
        f"next: fpgaserve serve {report['path']}   or   fpgaserve model register {report['path']} --name NAME"
    )
    return 0
