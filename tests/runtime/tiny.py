"""A tiny image pipeline for tests: preprocess (32x32) -> 2-conv featurizer on the FPGA -> 4-way classifier."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import skimage.data

LABELS = ["ant", "bee", "cat", "dog"]
SIZE = 32


def tiny_featurizer() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, outputs, name="tiny_featurizer")


def tiny_classifier(features: int = 16) -> Any:
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((features,), name="features")
    outputs = keras.layers.Dense(len(LABELS), activation="softmax", name="probabilities")(inputs)
    return keras.Model(inputs, outputs, name="tiny_classifier")


def tiny_definition(featurizer: Any, classifier: Any, *, name: str = "tiny") -> Any:
    import tensorflow as tf

    from fpgaserve.sdk import FpgaStage, KerasStage, ModelDefinition, TensorflowStage, preprocess_array

    definition = ModelDefinition(name, labels=LABELS)
    definition.pipeline.append(
        TensorflowStage(
            lambda images: preprocess_array(images, model="none", size=SIZE),
            input_signature=tf.TensorSpec([None], tf.string, name="images"),
            name="preprocess",
        )
    )
    definition.pipeline.append(FpgaStage(featurizer, name="featurizer"))
    definition.pipeline.append(KerasStage(classifier, name="classifier"))
    return definition


def encode(image: np.ndarray, fmt: str = "png") -> bytes:
    import PIL.Image

    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format=fmt.upper())
    return buffer.getvalue()


def sample_images() -> list[bytes]:
    """Three encoded photos: a JPEG, a PNG, and a grayscale PNG of another aspect ratio."""
    return [
        encode(skimage.data.chelsea(), "jpeg"),
        encode(skimage.data.coffee(), "png"),
        encode(skimage.data.camera()[:300], "png"),
    ]
