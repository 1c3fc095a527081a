"""Which TensorFlow stages fpgaserve built itself, and their TensorFlow-free form (the host lowering).

Role: at package time, ``TensorflowStage``/``KerasStage.export`` (``sdk.stages``) ask this module
for a stage's lowering; the server then runs it with numpy and Pillow (``runtime.host_stages``)
instead of importing TensorFlow. Nothing is lowered by guessing what a graph computes:

- ``preprocess_array`` records every output tensor it builds (with its input tensor and its
  parameters) in a registry keyed by the tensor's graph; a stage is lowered only when its input and
  output are exactly such a pair (the notebook's ``TensorflowStage(sess, in_images, image_tensors)``,
  or a function whose trace returns ``preprocess_array``'s output of its own input);
- the zoo registers the default classifiers it builds (``register_classifier``) and the frozen
  copies ``Resnet50.get_default_classifier`` imports into a graph (``record``); a Keras model is
  lowered only when it is one of them and still exactly input -> [dropout] -> dense(softmax|linear);
- then the lowering is checked against the stage's own SavedModel function on probe inputs
  (``verify``); a mismatch beyond the stated tolerance keeps the stage a TensorFlow stage.
"""

from __future__ import annotations

import io
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from fpgaserve.sdk.preprocessing import Preprocessing

__all__ = [
    "HOST_WEIGHTS",
    "Lowering",
    "keras_lowering",
    "preprocess_lowering",
    "record",
    "recorded",
    "register_classifier",
    "verify",
]

logger = logging.getLogger(__name__)
HOST_WEIGHTS = "host/dense.npz"  # relative to the stage's directory


@dataclass(frozen=True)
class Lowering:
    """A stage's host form: its manifest ``host`` fields and, for a dense layer, its weights."""

    host: dict[str, Any]
    arrays: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)

    def write(self, directory: Path) -> dict[str, Any]:
        """Write the weights (if any) under the stage's ``directory``; returns the ``host`` fields with
        ``weights`` relative to that directory (the package writer makes it package-relative)."""
        if not self.arrays:
            return dict(self.host)
        target = directory / HOST_WEIGHTS
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **self.arrays)  # plain .npy members: no pickles
        target.write_bytes(buffer.getvalue())
        return {**self.host, "weights": HOST_WEIGHTS}


@dataclass(frozen=True)
class _Record:
    input_name: str
    lowering: Lowering


# graph -> output tensor name -> what built it. Weak: a graph that is gone takes its records along.
_RECORDS: weakref.WeakKeyDictionary[Any, dict[str, _Record]] = weakref.WeakKeyDictionary()
# Keras classifiers the zoo built.
_CLASSIFIERS: weakref.WeakSet[Any] = weakref.WeakSet()


def record(input_tensor: Any, output_tensor: Any, lowering: Lowering) -> None:
    """Note that ``output_tensor`` is fpgaserve's construction ``lowering`` of ``input_tensor``."""
    graph = output_tensor.graph
    if input_tensor.graph is not graph:
        return
    _RECORDS.setdefault(graph, {})[output_tensor.name] = _Record(input_tensor.name, lowering)


def recorded(input_tensor: Any, output_tensor: Any) -> Lowering | None:
    """The lowering recorded for exactly this input and output tensor, if any."""
    graph = getattr(output_tensor, "graph", None)
    if graph is None or getattr(input_tensor, "graph", None) is not graph:
        return None
    entry = _RECORDS.get(graph, {}).get(output_tensor.name)
    return entry.lowering if entry is not None and entry.input_name == input_tensor.name else None


def preprocess_lowering(*, size: int, crop_padding: int, preprocessing: Preprocessing) -> Lowering:
    order, mean, std = preprocessing.host_normalization
    host = {"op": "image-preprocess", "size": size, "crop_padding": crop_padding, "channel_order": order}
    return Lowering({**host, "mean": list(mean), "std": list(std)})


def register_classifier(model: Any) -> None:
    """The zoo built ``model`` (features -> [dropout] -> dense with softmax)."""
    _CLASSIFIERS.add(model)


def keras_lowering(model: Any) -> Lowering | None:
    """The dense lowering of a registered zoo classifier that is still exactly what the zoo built."""
    try:
        if model not in _CLASSIFIERS:
            return None
    except TypeError:  # not weak-referenceable: not one of ours
        return None
    return dense_lowering(model)


def dense_lowering(model: Any) -> Lowering | None:
    """input -> dropout* -> dense(softmax|linear), one chain, float32: its lowering; else None."""
    import keras

    layers = list(model.layers)
    if len(model.inputs) != 1 or len(model.outputs) != 1 or not layers:
        return None
    if not isinstance(layers[0], keras.layers.InputLayer):
        return None
    *middle, dense = layers[1:] or [None]
    if not isinstance(dense, keras.layers.Dense) or not all(
        type(layer) is keras.layers.Dropout for layer in middle
    ):
        return None
    if type(dense) is not keras.layers.Dense or not dense.use_bias or dense.dtype != "float32":
        return None
    activations = {keras.activations.softmax: "softmax", keras.activations.linear: "linear"}
    activation = activations.get(dense.activation)
    if activation is None or getattr(dense, "lora_enabled", False):
        return None
    # The chain: each layer's single input is the previous layer's output.
    previous = model.inputs[0]
    for layer in layers[1:]:
        if len(layer._inbound_nodes) != 1:
            return None
        node = layer._inbound_nodes[0]
        if len(node.input_tensors) != 1 or node.input_tensors[0] is not previous:
            return None
        previous = node.output_tensors[0]
    if previous is not model.outputs[0]:
        return None
    kernel, bias = (np.asarray(w, np.float32) for w in dense.get_weights())
    return Lowering({"op": "dense", "activation": activation}, {"kernel": kernel, "bias": bias})


def _probe_images() -> list[bytes]:
    """Encoded probes for a preprocessing lowering: odd sizes, JPEG and PNG, gray and RGBA."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:301, 0:453]
    smooth = np.stack([x * 255 // 452, y * 255 // 300, (x + y) * 255 // 753], axis=-1).astype(np.uint8)
    probes = [
        ("JPEG", Image.fromarray(smooth)),
        ("PNG", Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8))),
        ("PNG", Image.fromarray(rng.integers(0, 256, (61, 29), dtype=np.uint8))),
        ("PNG", Image.fromarray(rng.integers(0, 256, (40, 44, 4), dtype=np.uint8), "RGBA")),
    ]
    encoded = []
    for fmt, image in probes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        encoded.append(buffer.getvalue())
    return encoded


def verify(
    lowering: Lowering, tf_function: Callable[[Any], Any], *, input_dtype: str, input_width: int | None
) -> float | None:
    """Run the lowering and the stage's TensorFlow function on probes; the max abs difference, or
    None (with a warning) when it exceeds the stated tolerance (``runtime.host_stages``)."""
    from fpgaserve.runtime.host_stages import PREPROCESS_TOLERANCE, PROBABILITY_TOLERANCE, run_lowering

    if lowering.host["op"] == "image-preprocess":
        if input_dtype != "string":
            return None
        probes: Any = _probe_images()
        tolerance = PREPROCESS_TOLERANCE
    else:
        if input_width is None:
            return None
        probes = np.random.default_rng(0).normal(0.0, 2.0, (4, input_width)).astype(np.float32)
        tolerance = PROBABILITY_TOLERANCE
    host = run_lowering(lowering.host, lowering.arrays, probes)
    reference = np.asarray(tf_function(probes), np.float32)
    if host.shape != reference.shape:
        logger.warning("not lowering a stage: host output %s, TensorFlow %s", host.shape, reference.shape)
        return None
    difference = float(np.abs(host - reference).max())
    if difference > tolerance:
        logger.warning("not lowering a stage: differs from TensorFlow by %g (> %g)", difference, tolerance)
        return None
    return difference
