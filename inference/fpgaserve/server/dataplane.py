"""The protocol-independent data plane: model state, input checks and batching.

Role: every protocol face (``rest_score``, ``rest_v2``, ``rest_tfserving``) decodes its own request
format into a list of inputs (with ``codec``) and calls ``DataPlane.infer``; this module checks the model is ready,
validates the inputs against the runtime's ``input_spec`` (large inputs in a thread: checking
them must not block the event loop), runs them through the ``DynamicBatcher`` and returns their outputs.
``web_app`` owns one ``DataPlane`` per app and loads, warms up and closes the model through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fpgaserve.api.errors import UserError
from fpgaserve.npu.allocator import resident_mib, trim_heap
from fpgaserve.runtime.images import check_image_pixels
from fpgaserve.runtime.protocol import InvalidInput, ModelRuntime, TensorSpec
from fpgaserve.server.batch_requests import BatchOutput, Item
from fpgaserve.server.batching import DynamicBatcher
from fpgaserve.server.codec import check_shape
from fpgaserve.server.errors import InferenceTimeout, InvalidRequest, ModelNotFound, ModelNotReady
from fpgaserve.server.metrics import ServerMetrics
from fpgaserve.server.settings import ServerSettings

__all__ = ["WARM_UP_BATCH", "DataPlane", "ModelState", "RuntimeSource"]

logger = logging.getLogger(__name__)

RuntimeSource = ModelRuntime | Callable[[], ModelRuntime]


class ModelState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"


class DataPlane:
    """One served model: its state, its batcher, and ``infer`` for the protocol faces."""

    def __init__(self, *, settings: ServerSettings, metrics: ServerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.state = ModelState.LOADING
        self.failure: str | None = None
        self._runtime: ModelRuntime | None = None
        self._batcher: DynamicBatcher | None = None
        # Validation decodes images: a small pool of its own, beside the batch worker.
        self._validators = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fpgaserve-validate")
        self._loading: asyncio.Future[ModelRuntime] | None = None

    # -- lifecycle (called by web_app's cleanup context) -------------------------------------------

    async def load(self, source: RuntimeSource) -> None:
        """Load the model (a loader runs in a thread), start batching, warm up, then turn ready."""
        try:
            if isinstance(source, ModelRuntime):
                runtime = source
            else:
                self._loading = asyncio.get_running_loop().run_in_executor(None, source)
                runtime = await asyncio.shield(self._loading)
            self._runtime = runtime
            self._batcher = DynamicBatcher(
                runtime=runtime,
                metrics=self.metrics,
                max_batch_size=self.settings.max_batch_size,
                max_batch_delay_s=self.settings.max_batch_delay_ms / 1000,
                max_queue=self.settings.max_queue,
                idle_s=self.settings.idle_trim_s,
                on_idle=_trim_heap,
            )
            self._batcher.start()
            await self._warm_up(runtime)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.state, self.failure = ModelState.FAILED, f"{type(exc).__name__}: {exc}"
            # A refused package (UserError) is explained by its message; a bug needs its traceback.
            logger.error(
                "model failed to load: %s", self.failure, exc_info=None if isinstance(exc, UserError) else exc
            )
            raise
        if self.state is ModelState.LOADING:
            self.state = ModelState.READY
            self.metrics.model_ready.set(1)
            logger.info("model %s version %s is ready", runtime.name, runtime.version)

    async def _warm_up(self, runtime: ModelRuntime) -> None:
        # One small batch through the server's own path starts the batch worker and, on the runtime's
        # side, the split of a batch into parts on their threads: every kernel and thread a batch of
        # any size uses, those of a batch of one included (`fpgaserve serve` loads its pipeline
        # without a warm-up of its own for that reason: tests/runtime/test_host_serving.py). Not a
        # full batch: that added its activations' high-water mark to the memory at ready (+190 MiB
        # for EfficientNet-Lite0 at 8, kept by npu/allocator.py's tuning) and half a second to the
        # start, for page faults that the first full batch pays itself (milliseconds;
        # docs/benchmarks.md, issue 14).
        item = _warm_up_input(runtime.input_spec)
        if item is None:
            logger.info("no warm-up input for input shape %s; skipping warm-up", runtime.input_spec.shape)
            return
        count = min(WARM_UP_BATCH, self.settings.max_batch_size, self.settings.max_queue)
        try:
            await self._run([item] * count, runtime=runtime, timeout_s=None)  # a first run may be slow
        except InvalidInput as exc:
            logger.info("the model refused the synthetic warm-up input (%s); skipping warm-up", exc)

    def drain(self) -> None:
        """Stop being ready (SIGTERM): probes fail, in-flight requests still finish."""
        if self.state is ModelState.READY:
            self.state = ModelState.DRAINING
            self.metrics.model_ready.set(0)

    async def close(self) -> None:
        """Stop batching and release the model and device (also one still loading)."""
        self.drain()
        if self._batcher is not None:
            await self._batcher.close()
        runtime = self._runtime
        if runtime is None and self._loading is not None:
            with contextlib.suppress(Exception):
                runtime = await self._loading  # a load still running in its thread: wait, then close
        if runtime is not None:
            await asyncio.get_running_loop().run_in_executor(None, runtime.close)
        self._validators.shutdown(wait=False)
        self._runtime = None

    # -- queries ------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    def not_ready_reason(self) -> str:
        if self.state is ModelState.FAILED:
            return f"the model failed to load: {self.failure}"
        if self.state is ModelState.DRAINING:
            return "the server is shutting down"
        return "the model is still loading; retry shortly"

    def model(self, name: str | None = None, *, version: str | None = None) -> ModelRuntime:
        """The ready runtime; ``ModelNotFound`` unless ``name`` (and ``version``) are its own.

        A draining server still serves: it is unready so that traffic moves away, and what still
        arrives in the meantime is answered."""
        runtime = self._runtime
        if runtime is None or self.state not in (ModelState.READY, ModelState.DRAINING):
            raise ModelNotReady(self.not_ready_reason())
        if name is not None and name != runtime.name:
            raise ModelNotFound(f"model {name!r} is not served here; this server serves {runtime.name!r}")
        if version is not None and version != runtime.version:
            raise ModelNotFound(
                f"model {name!r} has no version {version!r} here; this server serves version {runtime.version!r}"
            )
        return runtime

    # -- inference ----------------------------------------------------------------------------------

    async def infer(self, items: list[Item]) -> BatchOutput:
        """Validate ``items`` against the model's input and run them; the one way into the model."""
        runtime = self.model()
        if not items:
            raise InvalidRequest("the request holds no inputs")
        return await self._run(items, runtime=runtime, timeout_s=self.settings.request_timeout_s)

    async def _run(self, items: list[Item], *, runtime: ModelRuntime, timeout_s: float | None) -> BatchOutput:
        batcher = self._batcher
        if batcher is None:
            raise ModelNotReady(self.not_ready_reason())
        loop = asyncio.get_running_loop()
        end = None if timeout_s is None else loop.time() + timeout_s
        with batcher.inflight(len(items)):
            try:
                check = functools.partial(
                    _validate_all, runtime, items, max_image_pixels=self.settings.max_image_pixels
                )
                if _size(items) <= INLINE_CHECK_BYTES:
                    most = check()
                else:
                    most = await asyncio.wait_for(loop.run_in_executor(self._validators, check), timeout_s)
                try:
                    return await batcher.submit(
                        items, timeout_s=None if end is None else max(0.0, end - loop.time())
                    )
                finally:
                    if most > TRIM_AFTER_PIXELS:
                        with contextlib.suppress(RuntimeError):  # the pool is shut down: closing
                            loop.run_in_executor(self._validators, trim_heap)
            except asyncio.TimeoutError:
                raise InferenceTimeout(
                    f"inference did not finish within {timeout_s:g} s (--request-timeout-s); "
                    "retry later or send fewer inputs"
                ) from None


# The server's warm-up batch: two inputs, the smallest batch that is split into parts (npu/executor.py).
WARM_UP_BATCH = 2


# Inputs this small are checked on the event loop: their header checks take well under a
# millisecond (Pillow parses headers in time linear in the bytes), less than the round trip to a
# validator thread and back, which was a measurable part of one client's latency.
INLINE_CHECK_BYTES = 64 * 1024


def _size(items: list[Item]) -> int:
    return sum(len(item) if isinstance(item, bytes) else item.nbytes for item in items)


def _validate_all(runtime: ModelRuntime, items: list[Item], *, max_image_pixels: int) -> int:
    """Validator thread: the spec's kind and shape, an image's pixel count from its header (before
    anything decodes it), then the runtime's own cheap check. Returns the most pixels of an image."""
    spec = runtime.input_spec
    most = 0
    for index, item in enumerate(items):
        if spec.dtype == "string":
            if not isinstance(item, bytes):
                raise InvalidInput(f"{spec.name!r} takes encoded images (bytes), not tensors", index=index)
            # A runtime that decodes an over-limit JPEG at a reduced DCT scale says so (jpeg_draft).
            draft = bool(getattr(runtime, "jpeg_draft", False))
            most = max(
                most, check_image_pixels(item, index=index, max_pixels=max_image_pixels, jpeg_draft=draft)
            )
        elif not isinstance(item, np.ndarray):
            raise InvalidInput(f"{spec.name!r} takes {spec.dtype} tensors, not encoded images", index=index)
        else:
            check_shape(item.shape, spec, index=index)
        runtime.validate(item, index=index)
    return most


# Images of more pixels than this leave the decode's buffers in the allocator's free lists; after
# one, free memory is handed back to the system (glibc keeps it otherwise: a resident size that
# only grows, until the pod's memory limit).
TRIM_AFTER_PIXELS = 2048 * 2048


def _warm_up_input(spec: TensorSpec) -> Item | None:
    if spec.dtype == "string":
        return _gray_png(side=64)
    if any(d is None for d in spec.shape):
        return None
    return np.zeros(tuple(d for d in spec.shape if d is not None), dtype=np.float32)


def _gray_png(*, side: int) -> bytes:
    """A mid-gray RGB PNG, written without an image library (the server has none of its own)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x80" * (3 * side) for _ in range(side))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _trim_heap() -> None:
    """The batcher's ``on_idle`` (its worker thread): give the last batches' free memory back."""
    before = resident_mib()
    released = trim_heap()
    after = resident_mib()
    if before is not None and after is not None:
        logger.debug("idle: heap trimmed (%s), resident %.0f -> %.0f MiB", released, before, after)
