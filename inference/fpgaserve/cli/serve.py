"""``fpgaserve serve MODEL_DIR``: serve a model package over HTTP(S).

Role: the command line of ``fpgaserve.server`` (the container command the operator generates
with ``fpgaserve.api.serving.serve_argv``). It parses exactly those flags into ``ServerSettings``,
checks what can be checked before listening (the model directory, TLS files, the keys file), then
runs the server. The runtime (``fpgaserve.runtime.pipeline``: numpy, numba, and TensorFlow for a
package with a stage that needs it) is imported and loaded in a thread of its own started first,
before the server's modules (aiohttp) are imported: the two overlap where they release the GIL
(reading and inflating the package, LLVM loading the cached kernels), and the probes answer while it
loads; when numba's cache lacks a kernel, its first compile logs that kernels are being compiled
(``fpgaserve.npu.precompile.announce_compiling``). Tests pass their own ``load`` to ``run_serve``.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from fpgaserve.api.errors import UserError
from fpgaserve.server.settings import ServerSettings as _Defaults  # a light module: dataclass only

if TYPE_CHECKING:
    from fpgaserve.runtime.protocol import ModelRuntime

__all__ = ["add_parser", "run_serve", "settings_from_args"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Serve a model package (service_def.zip, or the directory storage-init unpacked it into) on one
port: POST /score, the Open Inference Protocol v2 (/v2/...), TF Serving REST (/v1/models/...),
/healthz, /readyz, /metrics and /openapi.json; with --grpc-port also gRPC on a second port (OIP v2,
TF Serving's PredictionService, grpc.health.v1). With --keys-file every route but the probes,
/metrics and /openapi.json needs 'Authorization: Bearer <key>'; the file is re-read when it
changes (over gRPC: 'authorization: Bearer <key>' metadata). With --tls-cert and --tls-key both
ports speak TLS (1.2 or newer).
"""

EPILOG = """\
A service_def.zip comes from Python: zoo_pipeline(model).save("service_def.zip") or
ModelDefinition(...).save(...) (docs/sdk.md); keys.json is {"primaryKey": "...", "secondaryKey": "..."}.

examples:
  fpgaserve serve service_def.zip
  fpgaserve serve service_def.zip --port 8443 --tls-cert cert.pem --tls-key key.pem --keys-file keys.json
  fpgaserve serve /mnt/models --grpc-port 8081 --max-batch-size 4
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model package over HTTP(S): /score, OIP v2, TF Serving REST",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model_dir", metavar="MODEL_DIR", help="the package: service_def.zip or its unpacked directory"
    )
    p.add_argument("--host", default=_Defaults.host, help="address to listen on (default: %(default)s)")
    p.add_argument(
        "--port", type=int, default=_Defaults.port, help="port to listen on (default: %(default)s)"
    )
    p.add_argument(
        "--grpc-port",
        type=int,
        metavar="PORT",
        help="also serve gRPC on PORT: OIP v2 (inference.GRPCInferenceService), TF Serving's "
        "PredictionService and grpc.health.v1 (default: no gRPC)",
    )
    p.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="TLS certificate chain; serve HTTPS (needs --tls-key)"
    )
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="TLS private key of --tls-cert")
    p.add_argument(
        "--keys-file",
        type=Path,
        metavar="JSON",
        help='{"primaryKey": ..., "secondaryKey": ...}; requests need one of them (default: no auth)',
    )
    batching = p.add_argument_group("batching and limits")
    batching.add_argument(
        "--max-batch-size",
        type=int,
        default=_Defaults.max_batch_size,
        metavar="N",
        help="inputs per batch (default: %(default)s)",
    )
    batching.add_argument(
        "--max-batch-delay-ms",
        type=float,
        default=_Defaults.max_batch_delay_ms,
        metavar="MS",
        help="longest an input waits for its batch to fill (default: %(default)s)",
    )
    batching.add_argument(
        "--max-queue",
        type=int,
        default=_Defaults.max_queue,
        metavar="N",
        help="inputs waiting before 503 (default: %(default)s)",
    )
    batching.add_argument(
        "--max-body-bytes",
        type=int,
        default=_Defaults.max_body_bytes,
        metavar="N",
        help="largest request body before 413 (default: %(default)s)",
    )
    batching.add_argument(
        "--max-image-pixels",
        type=int,
        default=_Defaults.max_image_pixels,
        metavar="N",
        help="largest image (width x height, read from its header before decoding) before 400 "
        "(default: %(default)s)",
    )
    batching.add_argument(
        "--request-timeout-s",
        type=float,
        default=_Defaults.request_timeout_s,
        metavar="S",
        help="longest a request may take, queue and compute, before 504 (default: %(default)s)",
    )
    batching.add_argument(
        "--header-timeout-s",
        type=float,
        default=_Defaults.header_timeout_s,
        metavar="S",
        help="a connection that sends no complete request head in this long is closed (default: %(default)s)",
    )
    batching.add_argument(
        "--max-connections",
        type=int,
        default=_Defaults.max_connections,
        metavar="N",
        help="open connections before new ones get 503 and are closed (default: %(default)s)",
    )
    batching.add_argument(
        "--drain-s",
        type=float,
        default=_Defaults.drain_s,
        metavar="S",
        help="after SIGTERM, how long to stay unready but serving before the port closes "
        "(default: %(default)s)",
    )
    batching.add_argument(
        "--shutdown-timeout-s",
        type=float,
        default=_Defaults.shutdown_timeout_s,
        metavar="S",
        help="how long in-flight requests may finish after SIGTERM (default: %(default)s)",
    )
    batching.add_argument(
        "--idle-trim-s",
        type=float,
        default=_Defaults.idle_trim_s,
        metavar="S",
        help="after this long without input, give the memory of the last batches back to the "
        "system (the next batch pays its page faults once); 0: never (default: %(default)s)",
    )
    p.set_defaults(func=_run)


def settings_from_args(args: argparse.Namespace) -> _Defaults:
    """``ServerSettings`` from parsed arguments; ``UserError`` for an inconsistent combination."""
    try:
        return _Defaults(
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            keys_file=args.keys_file,
            max_batch_size=args.max_batch_size,
            max_batch_delay_ms=args.max_batch_delay_ms,
            max_queue=args.max_queue,
            max_body_bytes=args.max_body_bytes,
            max_image_pixels=args.max_image_pixels,
            request_timeout_s=args.request_timeout_s,
            header_timeout_s=args.header_timeout_s,
            max_connections=args.max_connections,
            drain_s=args.drain_s,
            shutdown_timeout_s=args.shutdown_timeout_s,
            idle_trim_s=args.idle_trim_s,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None


def run_serve(args: argparse.Namespace, *, load: Callable[[Path], ModelRuntime] | None = None) -> int:
    """Run ``fpgaserve serve`` with parsed ``args``; ``load`` (default: the package pipeline) makes
    the runtime from the model directory in the server's load thread."""
    settings = settings_from_args(args)
    model_dir = Path(args.model_dir)
    if not model_dir.exists():
        raise UserError(f"{model_dir}: no such package file or directory")
    # Before any thread exists: glibc gives each thread its arena at its first allocation.
    from fpgaserve.npu.allocator import tune_allocator

    tune_allocator()

    def loader() -> ModelRuntime:
        if load is not None:
            return load(model_dir)
        return _load_pipeline(model_dir, max_image_pixels=settings.max_image_pixels)

    loading = _start_loading(loader)
    from fpgaserve.server.auth import KeyFileError
    from fpgaserve.server.server_main import run
    from fpgaserve.server.tls import TlsConfigError

    try:
        # The data plane waits for the load (in its executor) and turns ready after its warm-up.
        return run(runtime=loading.result, settings=settings, exit_process=True)
    except (KeyFileError, TlsConfigError, OSError) as exc:
        raise UserError(str(exc)) from None


def _start_loading(loader: Callable[[], ModelRuntime]) -> Future[ModelRuntime]:
    """Run ``loader`` in a daemon thread now; its result (or exception) in the returned future."""
    future: Future[ModelRuntime] = Future()

    def load() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(loader())
        except BaseException as exc:  # handed to the data plane, which logs it and stops the server
            future.set_exception(exc)

    threading.Thread(target=load, name="fpgaserve-load", daemon=True).start()
    return future


def _load_pipeline(model_dir: Path, *, max_image_pixels: int) -> ModelRuntime:
    # In the load thread: the pipeline brings numpy and numba, and TensorFlow (seconds) for a
    # package with a stage that needs it.
    from fpgaserve.package.reader import PackageError
    from fpgaserve.runtime.numba_typing import load_numba_typing
    from fpgaserve.runtime.pipeline import load_pipeline

    load_numba_typing()  # before the first kernel call: no scipy.linalg, no cffi (see the module)
    from fpgaserve.npu.precompile import announce_compiling

    # A first start compiles kernels in its warm-up, a long silence before ready: say so when numba
    # starts compiling one (nothing is said when they all load from the cache).
    announce_compiling(lambda notice: logger.info("%s", notice))
    try:
        # No warm-up batch of one here: the data plane's warm-up (a batch of two, split into parts
        # of one on their threads) loads the same kernels, and a batch of one before it cost about
        # 0.08 s of CPU on the way to ready that no request needed (docs/benchmarks.md).
        return load_pipeline(model_dir, max_image_pixels=max_image_pixels, warmup=False)
    except PackageError as exc:
        # A refused package is the user's to fix: one line, exit 2 (server_main), no traceback.
        raise UserError(f"{model_dir}: package refused: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    return run_serve(args)
