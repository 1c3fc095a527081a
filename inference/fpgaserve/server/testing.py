"""A small, real ``ModelRuntime`` for tests and benchmarks: no TensorFlow, no device.

Role: ``FakeRuntime`` truly implements the protocol: it decodes JPEG/PNG with Pillow, computes
deterministic class probabilities from the pixels (a fixed random projection and a softmax), models
a per-batch and per-input cost (sleeping, or spinning the CPU like the emulator does), and records
what it was asked, so tests can assert on batch sizes and threads. ``encode_png``/``encode_jpeg``
make test images.
"""

from __future__ import annotations

import functools
import io
import threading
import time
from typing import Literal

import numpy as np
import numpy.typing as npt

from fpgaserve.runtime.images import check_image_header
from fpgaserve.runtime.protocol import InvalidInput, PredictResult, TensorSpec

__all__ = ["FakeRuntime", "encode_jpeg", "encode_png", "gemms_per_second_here", "sample_image"]

_SIDE = 16  # images are reduced to 16x16 RGB before the projection


class FakeRuntime:
    """A deterministic image (or tensor) classifier behind the ``ModelRuntime`` protocol.

    ``input_kind="image"`` takes encoded images (``TensorSpec`` dtype ``string``); ``"tensor"``
    takes float32 vectors of ``tensor_size``. ``batch_cost_s + item_cost_s * n`` is spent per batch
    (``cost="spin"`` does that much CPU work in GEMMs, as the emulator does; ``"sleep"`` waits).
    """

    def __init__(
        self,
        *,
        name: str = "fake",
        version: str = "1",
        classes: int = 10,
        labels: bool = True,
        input_kind: Literal["image", "tensor"] = "image",
        tensor_size: int = 8,
        batch_cost_s: float = 0.0,
        item_cost_s: float = 0.0,
        cost: Literal["sleep", "spin"] = "sleep",
        device_seconds_per_item: float = 0.0002,
        gemms_per_second: float | None = None,
    ) -> None:
        self.name = name
        self.version = version
        if input_kind == "image":
            self.input_spec = TensorSpec(name="image", dtype="string", shape=())
            features = 3 * _SIDE * _SIDE
        else:
            self.input_spec = TensorSpec(name="features", dtype="float32", shape=(tensor_size,))
            features = tensor_size
        self.output_spec = TensorSpec(name="probabilities", dtype="float32", shape=(classes,))
        self.labels: list[str] | None = [f"class_{i}" for i in range(classes)] if labels else None
        self.batch_cost_s = batch_cost_s
        self.item_cost_s = item_cost_s
        self.cost = cost
        # The work per second of cost; pass one measured value to runtimes that must cost the same.
        self.gemms_per_second = gemms_per_second or (gemms_per_second_here() if cost == "spin" else 0.0)
        self.device_seconds_per_item = device_seconds_per_item
        self._weights = np.random.default_rng(0).standard_normal((features, classes)).astype(np.float32)
        self._lock = threading.Lock()
        self.batch_sizes: list[int] = []
        self.threads: set[str] = set()
        self.closed = False

    def validate(self, item: bytes | npt.NDArray[np.float32], *, index: int) -> None:
        """Cheap: the image's header and structure (Pillow's ``verify``), without decoding pixels."""
        if self.input_spec.dtype != "string":
            if not isinstance(item, np.ndarray) or item.shape != self.input_spec.shape:
                raise InvalidInput(f"expected a float32 vector of shape {self.input_spec.shape}", index=index)
            return
        if not isinstance(item, bytes):
            raise InvalidInput("expected an encoded image", index=index)
        check_image_header(item, index=index, formats=("JPEG", "PNG"))

    def predict(self, batch: list[bytes] | npt.NDArray[np.float32]) -> PredictResult:
        start = time.perf_counter()
        with self._lock:
            self.batch_sizes.append(len(batch))
            self.threads.add(threading.current_thread().name)
        if isinstance(batch, np.ndarray):
            features = batch.reshape(len(batch), -1).astype(np.float32)
        else:
            features = np.stack([self._pixels(item, index=i) for i, item in enumerate(batch)])
        logits = features @ self._weights
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        self._spend(self.batch_cost_s + self.item_cost_s * len(batch) - (time.perf_counter() - start))
        return PredictResult(
            outputs=probs.astype(np.float32), device_seconds=self.device_seconds_per_item * len(batch)
        )

    def close(self) -> None:
        self.closed = True

    def _pixels(self, item: bytes | npt.NDArray[np.float32], *, index: int) -> npt.NDArray[np.float32]:
        from PIL import Image

        if not isinstance(item, bytes):
            raise InvalidInput("expected an encoded image", index=index)
        try:
            with Image.open(io.BytesIO(item)) as image:
                small = image.convert("RGB").resize((_SIDE, _SIDE))
        except Exception as exc:  # e.g. a truncated JPEG passes verify() and fails here
            raise InvalidInput(f"the image does not decode ({exc})", index=index) from None
        return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0 - 0.5

    def _spend(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.cost == "sleep":
            time.sleep(seconds)
            return
        # A fixed amount of work, not a fixed time: CPU taken by others slows it, as it would the
        # emulator. BLAS releases the GIL, like the emulator's GEMMs.
        a = np.ones((_GEMM, _GEMM), dtype=np.float32)
        for _ in range(max(1, round(seconds * self.gemms_per_second))):
            a = (a @ a) * np.float32(1e-2)


_GEMM = 96


@functools.cache
def gemms_per_second_here() -> float:
    """How many of ``_spend``'s GEMMs this machine does per second (measured once per process)."""
    a = np.ones((_GEMM, _GEMM), dtype=np.float32)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(200):
            a = (a @ a) * np.float32(1e-2)
        best = max(best, 200 / (time.perf_counter() - start))
    return best


def sample_image(*, seed: int = 0, side: int = 64) -> npt.NDArray[np.uint8]:
    """A deterministic RGB test picture (smooth gradients and a little noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    channels = [np.sin(3 * x + seed), np.cos(4 * y - seed), x * y]
    image = np.stack(channels, axis=-1) * 0.4 + 0.5 + rng.normal(0, 0.03, (side, side, 3))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def encode_png(image: npt.NDArray[np.uint8]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_jpeg(image: npt.NDArray[np.uint8], *, quality: int = 90) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
