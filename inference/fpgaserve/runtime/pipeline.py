"""The pipeline runtime: a verified service package behind the ``ModelRuntime`` protocol.

Role: what ``fpgaserve serve`` loads (``load_pipeline``) and calls from its worker threads. A
TensorFlow/Keras stage with a host lowering (``runtime: host``: the zoo's preprocessing and
classifiers) runs with numpy and Pillow (``runtime.host_stages``); any other one's SavedModel is
loaded once and runs on the CPU, and TensorFlow is imported only then (a standard package never
imports it: tests/runtime/test_host_stages.py). Each FPGA stage's program
runs through an ``Executor`` on the emulated device(s) of this container
(``devices_from_environment``), batches taking the devices in turn. Loading ends with a warm-up
batch, so the first request does not pay for tracing and kernel compilation.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fpgaserve.api.manifest import FpgaStageSpec, KerasStageSpec, TensorflowStageSpec, TensorSpecModel
from fpgaserve.npu.device import EmulatedDevice
from fpgaserve.npu.executor import Executor, InputShapeError
from fpgaserve.npu.program import load_program
from fpgaserve.package.reader import DEFAULT_LIMITS, PackageLimits, ServiceDefinition, load_service_definition
from fpgaserve.runtime.host_stages import DEFAULT_DECODE_PIXELS, DenseStage, ImagePreprocessStage, host_stage
from fpgaserve.runtime.images import DECODABLE_FORMATS, check_image_header
from fpgaserve.runtime.protocol import InvalidInput, PredictResult, PreparedBatch, TensorSpec

__all__ = ["PipelineRuntime", "load_pipeline"]

logger = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
Batch = list[bytes] | npt.NDArray[Any]


def _protocol_spec(spec: TensorSpecModel) -> TensorSpec:
    return TensorSpec(name=spec.name, dtype=spec.dtype, shape=tuple(spec.shape))


def _shape_matches(shape: tuple[int, ...], spec: TensorSpecModel) -> bool:
    return len(shape) == len(spec.shape) and all(
        d is None or d == s for d, s in zip(spec.shape, shape, strict=True)
    )


class _CpuStage:
    """A SavedModel signature, called with the manifest's input key."""

    def __init__(self, spec: TensorflowStageSpec | KerasStageSpec, definition: ServiceDefinition) -> None:
        try:
            import tensorflow as tf
        except ImportError as exc:  # the serve-slim image (Dockerfile) has no TensorFlow
            raise RuntimeError(
                f"stage {spec.name!r} is a TensorFlow stage with no host form, and TensorFlow cannot be "
                f"imported here ({exc}); serve this package with the full fpgaserve image, or re-save it "
                "with this SDK if the stage is fpgaserve's own preprocessing or classifier"
            ) from None

        self.spec = spec
        self._tf = tf
        self._loaded = tf.saved_model.load(str(definition.member_path(spec.path)))
        try:
            self._fn = self._loaded.signatures[spec.signature]
        except KeyError:
            raise RuntimeError(
                f"stage {spec.name!r}: its SavedModel has no signature {spec.signature!r}"
            ) from None
        _, inputs = self._fn.structured_input_signature
        if set(inputs) != {spec.input.name} or spec.output.name not in self._fn.structured_outputs:
            raise RuntimeError(
                f"stage {spec.name!r}: signature {spec.signature!r} takes {sorted(inputs)} and returns "
                f"{sorted(self._fn.structured_outputs)}, not {spec.input.name!r} -> {spec.output.name!r}"
            )

    def run(self, x: Any) -> tuple[npt.NDArray[Any], float]:
        tensor = self._tf.constant(x, dtype=self._tf.string if self.spec.input.dtype == "string" else None)
        out = self._fn(**{self.spec.input.name: tensor})[self.spec.output.name]
        return np.asarray(out.numpy()), 0.0

    def close(self) -> None:
        pass


class _FpgaStage:
    """A device program with one executor per device; batches take the devices in turn."""

    def __init__(
        self, spec: FpgaStageSpec, definition: ServiceDefinition, devices: Sequence[EmulatedDevice]
    ) -> None:
        self.spec = spec
        program = load_program(definition.member_path(spec.path))
        if tuple(program.input_shape) != tuple(spec.input.shape) or tuple(program.output_shape) != tuple(
            spec.output.shape
        ):
            raise RuntimeError(
                f"stage {spec.name!r}: program shapes {program.input_shape} -> {program.output_shape} "
                f"differ from the manifest's {spec.input.describe()} -> {spec.output.describe()}"
            )
        self._executors: list[Executor] = []
        try:
            for device in devices:
                self._executors.append(Executor(program, device=device))
        except Exception:
            self.close()
            raise
        self._turn = itertools.count()  # next() on a count is atomic under the GIL

    def run(self, x: Any) -> tuple[npt.NDArray[Any], float]:
        executor = self._executors[next(self._turn) % len(self._executors)]
        result = executor.run(np.asarray(x, dtype=np.float32))
        return result.outputs, result.device_seconds

    def close(self) -> None:
        for executor in self._executors:
            executor.close()
        self._executors = []


class PipelineRuntime:
    """A loaded, warmed-up package (implements ``fpgaserve.runtime.protocol.StagedRuntime``)."""

    def __init__(
        self,
        definition: ServiceDefinition,
        *,
        devices: Sequence[EmulatedDevice],
        warmup: bool = True,
        owned_dir: Path | None = None,
        host_stages: bool = True,
        max_image_pixels: int = DEFAULT_DECODE_PIXELS,
    ) -> None:
        """``host_stages=False`` runs every TensorFlow/Keras stage's SavedModel even where a host
        lowering exists (the comparison the tests make); ``max_image_pixels``: the server's limit, over
        which a JPEG is decoded at a reduced DCT scale by a host preprocessing stage."""
        manifest = definition.manifest
        if not devices and any(isinstance(s, FpgaStageSpec) for s in manifest.pipeline):
            raise RuntimeError("the package has an FPGA stage but no device was given")
        self.definition = definition
        self.name = manifest.name
        self.version = manifest.version
        self.input_spec = _protocol_spec(manifest.input)
        self.output_spec = _protocol_spec(manifest.output)
        self.labels = definition.labels()
        self.devices = list(devices)
        self._owned_dir = owned_dir  # a temporary extraction to delete on close
        self._closed = False
        self._lock = threading.Lock()
        self._check_labels()
        self._stages: list[_CpuStage | _FpgaStage | ImagePreprocessStage | DenseStage] = []
        try:
            for spec in manifest.pipeline:
                if isinstance(spec, FpgaStageSpec):
                    self._stages.append(_FpgaStage(spec, definition, self.devices))
                elif spec.runtime == "host" and host_stages:
                    weights = getattr(spec.host, "weights", None)
                    path = None if weights is None else definition.member_path(weights)
                    self._stages.append(host_stage(spec, max_pixels=max_image_pixels, member_path=path))
                else:
                    self._stages.append(_CpuStage(spec, definition))
            # Whether a JPEG over the pixel limit is decoded reduced (the data plane's header check
            # lets it through then: runtime.images.check_image_pixels).
            self.jpeg_draft = bool(self._stages) and isinstance(self._stages[0], ImagePreprocessStage)
            # Where ``prepare`` (host work) ends and ``complete`` (device work) begins.
            self._split = next(
                (i for i, stage in enumerate(self._stages) if isinstance(stage, _FpgaStage)),
                len(self._stages),
            )
            self.warmup_seconds = self._warm_up() if warmup else 0.0
        except Exception:
            self.close()
            raise

    def _check_labels(self) -> None:
        if self.labels is None:
            return
        classes = self.output_spec.shape[-1] if self.output_spec.shape else None
        if classes is not None and classes != len(self.labels):
            raise RuntimeError(
                f"the package has {len(self.labels)} labels but its output has {classes} classes"
            )

    def _warm_up(self) -> float:
        start = time.perf_counter()
        if self.input_spec.dtype == "string":
            sample: Batch = [_gray_png()]
        elif all(d is not None for d in self.input_spec.shape):
            dims = [int(d) for d in self.input_spec.shape if d is not None]
            sample = np.zeros((1, *dims), np.float32)
        else:
            return 0.0  # no shape to make a sample of
        self.predict(sample)
        seconds = time.perf_counter() - start
        logger.info("warmed up %s in %.2f s", self.name, seconds)
        return seconds

    # -- ModelRuntime ---------------------------------------------------------------------------

    def validate(self, item: bytes | npt.NDArray[np.float32], *, index: int) -> None:
        """Strings: the image's header and structure (``check_image_header``; no pixels are decoded:
        a full decode here decoded every image twice, about 10 % of the server's throughput on the
        emulated EfficientNet-Lite0). Damage past the header fails in ``predict``, which names the
        input (``_blame``); the batcher then fails only that request and runs the others again.
        Tensors: dtype and shape match."""
        if self.input_spec.dtype == "string":
            if not isinstance(item, (bytes, bytearray, memoryview)):
                raise InvalidInput(f"expected encoded image bytes, got {type(item).__name__}", index=index)
            check_image_header(bytes(item), index=index, formats=DECODABLE_FORMATS)
            return
        if isinstance(item, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"expected a {self.input_spec.dtype} tensor, got bytes", index=index)
        array = np.asarray(item)
        if not _shape_matches(array.shape, self._input_model()):
            raise InvalidInput(
                f"shape {list(array.shape)} does not match {self._input_model().describe()}",
                index=index,
            )
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise InvalidInput(f"dtype {array.dtype} is not numeric", index=index)

    def predict(self, batch: list[bytes] | npt.NDArray[np.float32]) -> PredictResult:
        return self.complete(self.prepare(batch))

    # -- StagedRuntime: predict in two steps the batcher overlaps across batches ---------------

    def prepare(self, batch: list[bytes] | npt.NDArray[np.float32]) -> PreparedBatch:
        """The stages before the first FPGA stage (the host preprocessing), or all if there is none."""
        self._check_open()
        x, device_seconds = self._run_stages(0, self._split, self._as_input(batch), batch)
        return PreparedBatch(values=x, size=len(batch), device_seconds=device_seconds)

    def complete(self, prepared: PreparedBatch) -> PredictResult:
        """The first FPGA stage and every stage after it (the classifier)."""
        self._check_open()
        x, device_seconds = self._run_stages(self._split, len(self._stages), prepared.values, None)
        outputs = np.ascontiguousarray(x, dtype=np.float32)
        return PredictResult(outputs=outputs, device_seconds=prepared.device_seconds + device_seconds)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"model {self.name!r} is closed")

    def _run_stages(self, first: int, end: int, x: Any, batch: Batch | None) -> tuple[Any, float]:
        """Stages ``first`` to ``end`` (exclusive) on ``x``; ``batch``: the encoded inputs, to name a
        bad one when a TensorFlow decoding stage fails on it."""
        device_seconds = 0.0
        for position in range(first, end):
            stage = self._stages[position]
            try:
                x, seconds = stage.run(x)
            except InputShapeError as exc:
                raise InvalidInput(str(exc)) from None
            except Exception as exc:
                if (
                    position == 0
                    and batch is not None
                    and isinstance(stage, _CpuStage)
                    and self.input_spec.dtype == "string"
                    and _is_tf_invalid_argument(exc)
                ):
                    self._blame(batch)
                raise
            device_seconds += seconds
        return x, device_seconds

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for stage in getattr(self, "_stages", []):
            stage.close()
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)

    def __enter__(self) -> PipelineRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers --------------------------------------------------------------------------------

    def _input_model(self) -> TensorSpecModel:
        return self.definition.manifest.input

    def _as_input(self, batch: Batch) -> Any:
        if len(batch) == 0:
            raise InvalidInput("empty batch")
        if self.input_spec.dtype == "string":
            if isinstance(batch, np.ndarray) and batch.dtype.kind not in ("S", "O"):
                raise InvalidInput(f"expected encoded images, got a {batch.dtype} tensor")
            items = list(batch)
            for index, item in enumerate(items):
                if not isinstance(item, (bytes, bytearray, memoryview)):
                    raise InvalidInput("expected encoded image bytes", index=index)
            return [bytes(item) for item in items]
        array = np.asarray(batch)
        if array.dtype.kind not in ("f", "i", "u") or not _shape_matches(
            array.shape[1:], self._input_model()
        ):
            raise InvalidInput(
                f"expected a batch of {self._input_model().describe()}, got {array.dtype} {list(array.shape)}"
            )
        return array.astype(np.int64 if self.input_spec.dtype == "int64" else np.float32, copy=False)

    def _blame(self, batch: Batch) -> None:
        """Find which input failed to decode, for an error that names it."""
        for index, item in enumerate(batch):
            _check_image(bytes(item), index=index)


def _is_tf_invalid_argument(exc: Exception) -> bool:
    import tensorflow as tf

    return isinstance(exc, tf.errors.InvalidArgumentError)


def _gray_png() -> bytes:
    """A 64x64 mid-gray PNG (Pillow): the warm-up image."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def _check_image(data: bytes, *, index: int) -> None:
    """The full check (``_blame``): the header, then a decode as the preprocessing stage does it."""
    import tensorflow as tf

    check_image_header(data, index=index, formats=DECODABLE_FORMATS)
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, ValueError):
        raise InvalidInput("not a decodable image (its data is damaged)", index=index) from None


def load_pipeline(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    devices: Sequence[EmulatedDevice] | None = None,
    warmup: bool = True,
    limits: PackageLimits = DEFAULT_LIMITS,
    host_stages: bool = True,
    max_image_pixels: int = DEFAULT_DECODE_PIXELS,
) -> PipelineRuntime:
    """Load a package (``service_def.zip``, or a directory storage-init extracted) ready to serve.

    The package is verified first (``fpgaserve.package``). Devices default to this container's
    (``devices_from_environment(env or os.environ)``); a zip is extracted into a temporary directory
    that ``close()`` removes. ``host_stages``, ``max_image_pixels``: as ``PipelineRuntime``'s.
    """
    source = Path(path)
    owned = None if source.is_dir() else Path(_mkdtemp())
    try:
        definition = load_service_definition(source, dest=owned, limits=limits)
        if devices is None:
            devices = _environment_devices(os.environ if env is None else env)
        return PipelineRuntime(
            definition, devices=devices, warmup=warmup, owned_dir=owned, host_stages=host_stages,
            max_image_pixels=max_image_pixels,
        )  # fmt: skip
    except BaseException:
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)
        raise


def _mkdtemp() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="fpgaserve-model-")


def _environment_devices(env: Mapping[str, str]) -> list[EmulatedDevice]:
    from fpgaserve.deviceplugin.discovery import devices_from_environment

    found = devices_from_environment(env)
    for info in found:
        if not info.healthy:
            logger.warning(
                "device %s is unhealthy (%s); using it anyway", info.device_id, info.reason or "no reason"
            )
    return [info.emulated() for info in found]
