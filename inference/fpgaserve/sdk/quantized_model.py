"""The base of the zoo's models: a quantized featurizer, its float classifier, its cached program.

Role: ``QuantizedModel`` holds what every zoo model shares: the format (or the ``"auto"`` search and
its budget), the pretrained weights' identity, the Keras models built once per process, and the
compiled program kept in ``model_path`` (by default the CLI's directory too,
``fpgaserve.sdk.model_path``) so later runs load it instead of compiling again. The models
themselves, with the Brainwave notebooks' names, are in ``fpgaserve.sdk.zoo``, which is where users
import them from.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fpgaserve.npu.bfp import DEFAULT_FORMAT, BfpFormat, get_format
from fpgaserve.npu.formats import AUTO_FORMAT, DEFAULT_BUDGET, Precision, parse_candidates
from fpgaserve.npu.program import (
    PROGRAM_FORMAT_VERSION,
    Program,
    ProgramFormatError,
    load_program,
    save_program,
)
from fpgaserve.sdk.model_path import DEFAULT_MODEL_PATH, program_locations

__all__ = ["F32", "RANDOM_SEED", "BuiltModels", "QuantizedModel", "WeightsUnavailableError", "keras_module"]

logger = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
RANDOM_SEED = 0
_BUILD_LOCK = threading.Lock()


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (no network, missing file...)."""


@dataclass(frozen=True)
class BuiltModels:
    featurizer: Any  # keras.Model
    classifier: Any  # keras.Model


# (model class name, weights id) -> built Keras models; building ResNet-50 twice costs seconds.
_CACHE: dict[tuple[str, str], BuiltModels] = {}


def _weights_id(weights: str) -> str:
    if weights in ("imagenet", "random"):
        return weights if weights == "imagenet" else f"random-{RANDOM_SEED}"
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file {weights!r} does not exist; use 'imagenet', 'random' or a path"
        )
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"file-{digest.hexdigest()[:16]}"


class QuantizedModel:
    """Base of the zoo: a featurizer for the FPGA plus its default float classifier."""

    name: ClassVar[str]
    zoo_version: ClassVar[str] = "1.0"
    input_shape: ClassVar[tuple[int, int, int]] = (224, 224, 3)
    feature_dim: ClassVar[int]
    default_weights: ClassVar[str]

    def __init__(
        self,
        model_path: str | os.PathLike[str] = DEFAULT_MODEL_PATH,
        is_frozen: bool = True,
        *,
        weights: str | None = None,
        fmt: BfpFormat | str = DEFAULT_FORMAT,
        format: BfpFormat | str | None = None,  # the notebook-style name of ``fmt``
        budget: str = DEFAULT_BUDGET,
        candidates: str | Sequence[str | BfpFormat | Precision] | None = None,
        bias_correction: bool = False,
        adapt: str | None = None,
    ) -> None:
        """``format``/``fmt``: a BFP format or its name, or ``"auto"`` for a mixed-precision program
        that keeps ``budget`` (e.g. ``"expected-top1>=98%"``, ``"top1@0.1>=99%"``, ``"cosine>=0.999"``) on the
        calibration photos, choosing per layer from ``candidates`` (e.g.
        ``"msfp16,int12-bfp/msfp16,int12-bfp"``, narrowest first, ``WEIGHTS/ACTIVATIONS`` for a pair;
        default: the search's ``DEFAULT_CANDIDATES``). ``bias_correction``: correct each matrix op's bias
        for the channel-mean shift quantization adds on the calibration photos (in the search, every
        variant; off by default: see docs/numerics.md, "Bias correction"). ``adapt``: adapt the
        weights to the formats on the calibration photos: ``"permute"`` (channels sorted by magnitude,
        exact), ``"refit"`` (layer-wise refit) or ``"permute+refit"`` (off by default: see
        docs/numerics.md, "Weight adaptation")."""
        self.model_path = Path(model_path).expanduser()
        self.is_frozen = is_frozen
        self.weights = weights or self.default_weights
        chosen = format if format is not None else fmt
        self.auto = isinstance(chosen, str) and chosen.lower() == AUTO_FORMAT
        if self.auto:
            from fpgaserve.compiler.precision import AccuracyBudget

            self.budget: str | None = str(AccuracyBudget.parse(budget))  # validated now, not at compile
            self.candidates: tuple[Precision, ...] | None = (
                parse_candidates(candidates) if candidates is not None else None
            )
            chosen = (self.candidates or (Precision.of(DEFAULT_FORMAT),))[-1].weights  # the base format
        else:
            if candidates is not None:
                raise ValueError("candidates go with format='auto'")
            self.budget = None
            self.candidates = None
        self.fmt = get_format(chosen) if isinstance(chosen, str) else chosen
        self.bias_correction = bias_correction
        if adapt is not None:
            from fpgaserve.compiler.adapt import check_adaptation

            check_adaptation(adapt)
            if bias_correction:
                raise ValueError("choose weight adaptation or bias_correction, not both")
        self.adapt = adapt
        self._weights_id = _weights_id(self.weights)
        self._program: Program | None = None

    @property
    def format_name(self) -> str:
        """``auto-<budget>`` for a mixed program (plus a digest of the candidates when given), else the
        format's name."""
        corrected = "-bc" if self.bias_correction else f"-{self.adapt}" if self.adapt else ""
        if not self.auto:
            return self.fmt.name + corrected
        if self.candidates is None:
            return f"{AUTO_FORMAT}-{self.budget}{corrected}"
        digest = hashlib.sha256(",".join(c.name for c in self.candidates).encode()).hexdigest()[:8]
        return f"{AUTO_FORMAT}-{self.budget}-c{digest}{corrected}"

    @property
    def version(self) -> str:
        return f"{self.name}-{self.zoo_version}-{self._weights_id}-{self.format_name}"

    # -- subclasses -------------------------------------------------------------------------

    def _build(self) -> BuiltModels:
        raise NotImplementedError

    def preprocess(self, images: npt.ArrayLike) -> F32:
        """uint8 RGB ``(H, W, 3)`` or ``(N, H, W, 3)`` -> the featurizer's float32 input batch."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------

    def _models(self) -> BuiltModels:
        key = (type(self).__name__, self._weights_id)
        with _BUILD_LOCK:
            if key not in _CACHE:
                import tensorflow as tf

                # The first use may come from inside a tf.function trace; building there would
                # turn set_weights into graph ops and leave the variables at their random init.
                with tf.init_scope():
                    built = self._build()
                built.featurizer.trainable = not self.is_frozen
                # A stage of exactly this classifier is also written in its TensorFlow-free form.
                from fpgaserve.sdk.host_lowering import register_classifier

                register_classifier(built.classifier)
                _CACHE[key] = built
            return _CACHE[key]

    @property
    def featurizer(self) -> Any:
        """The float Keras featurizer (what the FPGA program is compiled from)."""
        return self._models().featurizer

    @property
    def classifier(self) -> Any:
        """The default float Keras classifier: features -> class probabilities."""
        return self._models().classifier

    @property
    def _program_name(self) -> Path:
        """The program's file under a model path: ``<model>/<weights>-<format>-...-v<N>.fpga``."""
        fmt = self.format_name.replace(">=", "ge").replace("%", "pct")
        return (
            Path(self.name) / f"{self._weights_id}-{fmt}-{self.fmt.rounding}-v{PROGRAM_FORMAT_VERSION}.fpga"
        )

    @property
    def program_path(self) -> Path:
        """Where the compiled program is written (and looked for first)."""
        return self.model_path / self._program_name

    @property
    def program_cached(self) -> bool:
        """Whether ``program`` will load a compiled program rather than compile one (a file is there)."""
        return self._program is not None or any(
            p.is_file() for p in program_locations(self.model_path, self._program_name)
        )

    @property
    def program(self) -> Program:
        """The device program: loaded from ``model_path`` when compiled before, else compiled now."""
        if self._program is None:
            self._program = self._load_or_compile()
        return self._program

    def _load_or_compile(self) -> Program:
        path = self.program_path
        for found in program_locations(self.model_path, self._program_name):
            if not found.is_file():
                continue
            try:
                program = load_program(found)
                precision = program.metadata.get("precision", {})
                if (
                    program.fmt == self.fmt
                    and precision.get("budget") == self.budget
                    and (not self.auto or precision.get("candidates") == self._candidate_names())
                    and ("biasCorrection" in program.metadata) == self.bias_correction
                    and program.metadata.get("weightAdaptation", {}).get("method") == self.adapt
                ):
                    logger.info("loaded compiled %s from %s", self.name, found)
                    return program
            except ProgramFormatError as exc:
                logger.warning("recompiling %s: %s", self.name, exc)
        from fpgaserve.compiler.compile import compile_keras

        metadata = {"zoo": self.name, "version": self.version, "weights": self._weights_id}
        if self.auto:
            program = self._compile_auto(metadata)
        else:
            program = compile_keras(
                self.featurizer, fmt=self.fmt, input_shape=self.input_shape, name=self.name,
                metadata=metadata, bias_correction=self.bias_correction, adapt=self.adapt,
                calibration=self._calibration() if self.bias_correction or self.adapt else None,
            )  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_program(program, tmp)
        tmp.replace(path)  # atomic: a concurrent reader never sees half a file
        return program

    def _candidate_names(self) -> list[str]:
        """The names of the candidates the search uses (a program searched among others is stale)."""
        from fpgaserve.compiler.precision import DEFAULT_CANDIDATES

        return [c.name for c in (self.candidates or DEFAULT_CANDIDATES)]

    def _compile_auto(self, metadata: dict[str, Any]) -> Program:
        """The mixed-precision program: the search against float on the calibration photos."""
        from fpgaserve.compiler.compile import compile_keras
        from fpgaserve.compiler.precision import AccuracyBudget

        assert self.budget is not None
        calibration = self._calibration()
        classifier = self.classifier

        def head(features: F32) -> F32:
            return np.asarray(classifier(features, training=False), np.float32)

        logger.info("searching per-layer formats of %s for %s (takes minutes)", self.name, self.budget)
        return compile_keras(
            self.featurizer, fmt=self.fmt, input_shape=self.input_shape, name=self.name, metadata=metadata,
            budget=AccuracyBudget.parse(self.budget), calibration=calibration, head=head,
            candidates=self.candidates, bias_correction=self.bias_correction, adapt=self.adapt,
        )  # fmt: skip

    def _calibration(self) -> F32:
        """The zoo's calibration photos, preprocessed (none of them among bench/fpga.py's)."""
        from fpgaserve.sdk.calibration import calibration_photos

        return np.concatenate([self.preprocess(img) for img in calibration_photos()])

    def import_graph_def(self, image_tensors: Any) -> Any:
        """Apply the (float) featurizer to ``image_tensors``; the returned tensor is the feature tensor.

        In ``tf.compat.v1`` graph mode (the notebook form) the featurizer is imported into the
        tensor's graph as frozen constants. In a pipeline the FPGA stage replaces this part of the
        graph with the compiled program.
        """
        from fpgaserve.sdk.graph_mode import import_keras, is_v1_graph_tensor

        if is_v1_graph_tensor(image_tensors):
            return import_keras(lambda: self.featurizer, image_tensors, name=self.name)
        return self.featurizer(image_tensors)


def keras_module() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras
