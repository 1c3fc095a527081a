"""What the inference server needs from a loaded model: the ``ModelRuntime`` protocol.

Role: the seam between the server (``fpgaserve.server``, which owns HTTP, auth, batching and
metrics) and a loaded service definition (``fpgaserve.runtime.pipeline``, which owns TensorFlow
stages and the emulated FPGA). Tests drive the real server with fakes that implement this protocol.
A runtime may also be a ``StagedRuntime``: ``predict`` in two steps (host work, then device work)
that the server's batcher overlaps across consecutive batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["InvalidInput", "ModelRuntime", "PredictResult", "PreparedBatch", "StagedRuntime", "TensorSpec"]


class InvalidInput(ValueError):
    """An input the model cannot take (undecodable image, wrong shape or dtype); maps to HTTP 400.

    ``index`` names which input of the request was bad, when known; ``str()`` then reads
    ``input <index>: <message>``, so messages never name the position themselves (a batcher that
    moves the error to another request's numbering re-raises ``message`` with the new index).
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index

    def __str__(self) -> str:
        return self.message if self.index is None else f"input {self.index}: {self.message}"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor. ``shape`` excludes the batch dimension; None is any size."""

    name: str
    dtype: Literal["string", "float32", "int64"]  # "string": encoded image bytes
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class PredictResult:
    outputs: npt.NDArray[np.float32]  # (batch, *output_spec.shape)
    device_seconds: float  # modeled FPGA time of this batch (0 if no FPGA stage)


@runtime_checkable
class ModelRuntime(Protocol):
    """A loaded pipeline (warmed up by its loader, or by the server's own warm-up batch before it is
    ready). ``predict`` is synchronous and thread-safe; the server calls it from a worker thread
    with a whole dynamic batch."""

    name: str
    version: str
    input_spec: TensorSpec
    output_spec: TensorSpec
    labels: list[str] | None

    def validate(self, item: bytes | npt.NDArray[np.float32], *, index: int) -> None:
        """Cheap per-input check before batching (e.g. the image decodes); raises InvalidInput."""

    def predict(self, batch: list[bytes] | npt.NDArray[np.float32]) -> PredictResult:
        """Run the pipeline on a batch; raises InvalidInput for bad inputs."""

    def close(self) -> None:
        """Release the device and any other resources."""


@dataclass(frozen=True)
class PreparedBatch:
    """A batch after a ``StagedRuntime``'s host step: what its device step takes (opaque to callers)."""

    values: Any  # the host step's output, e.g. the preprocessed float32 images
    size: int  # inputs in the batch
    device_seconds: float = 0.0  # modeled FPGA time spent in the host step (normally none)


@runtime_checkable
class StagedRuntime(ModelRuntime, Protocol):
    """A runtime whose ``predict(batch)`` is ``complete(prepare(batch))``, bit for bit.

    ``prepare`` is the host work (decode, resize, normalize: mostly one core, under the GIL) and raises
    InvalidInput for bad inputs; ``complete`` is the rest (the device program, the classifier). The
    server runs them in two threads, so one batch's ``prepare`` overlaps the previous one's
    ``complete``; each is called for one batch at a time.
    """

    def prepare(self, batch: list[bytes] | npt.NDArray[np.float32]) -> PreparedBatch:
        """The host step of ``predict``; raises InvalidInput for bad inputs."""

    def complete(self, prepared: PreparedBatch) -> PredictResult:
        """The rest of ``predict``, on what ``prepare`` returned."""
