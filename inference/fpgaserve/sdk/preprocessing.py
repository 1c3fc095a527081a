"""``preprocess_array``: encoded images in, the featurizer's input batch out, in TensorFlow ops.

Role: the first stage of an image pipeline (the notebook's ``utils.preprocess_array``). It decodes a
batch of JPEG/PNG strings, crops the central square of side ``size / (size + 32)`` of the shorter
side, resizes it (bicubic, half-pixel centres) to ``size`` x ``size`` and normalises it the way the
zoo model was trained; it matches ``QuantizedModel.preprocess`` (numpy) to float rounding. Plain TF
ops, so it works in TF2 (eager or inside a ``tf.function``) and in ``tf.compat.v1`` graph mode.
Every output it builds in a graph is recorded (``sdk.host_lowering``), so that a stage that is
exactly this construction is also written in its TensorFlow-free form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fpgaserve.sdk.zoo import QuantizedModel

__all__ = ["PREPROCESSING", "Preprocessing", "get_preprocessing", "preprocess_array"]

CROP_PADDING = 32
_CAFFE_MEAN = (103.939, 116.779, 123.68)  # BGR


@dataclass(frozen=True)
class Preprocessing:
    """How one featurizer wants its input: square side and normalisation of RGB in [0, 255]."""

    size: int
    normalize: Callable[[Any], Any]  # float32 (N, size, size, 3) RGB -> the featurizer's input
    # The same normalisation as the host lowering states it: channel order, then (x - mean) / std.
    host_normalization: tuple[str, tuple[float, float, float], tuple[float, float, float]]


def _caffe_bgr(images: Any) -> Any:
    import tensorflow as tf

    # Keras ResNet-50 ("caffe" mode): RGB -> BGR, minus the ImageNet mean per channel.
    return images[..., ::-1] - tf.constant(_CAFFE_MEAN, tf.float32)


def _inception(images: Any) -> Any:
    # EfficientNet-Lite: (x - 127) / 128, which survives quantization better than per-channel stats.
    return (images - 127.0) / 128.0


def _identity(images: Any) -> Any:
    return images


PREPROCESSING: dict[str, Preprocessing] = {
    "resnet50": Preprocessing(224, _caffe_bgr, ("bgr", _CAFFE_MEAN, (1.0, 1.0, 1.0))),
    "efficientnet-lite0": Preprocessing(224, _inception, ("rgb", (127.0,) * 3, (128.0,) * 3)),
    # RGB in [0, 255]; pass size= for other featurizers
    "none": Preprocessing(224, _identity, ("rgb", (0.0,) * 3, (1.0,) * 3)),
}


def get_preprocessing(model: str | QuantizedModel) -> Preprocessing:
    name = model if isinstance(model, str) else model.name
    try:
        return PREPROCESSING[name.lower()]
    except KeyError:
        raise ValueError(f"no preprocessing named {name!r}; known: {', '.join(PREPROCESSING)}") from None


def preprocess_array(
    string_tensor: Any, *, model: str | QuantizedModel = "resnet50", size: int | None = None
) -> Any:
    """Decode and preprocess a batch of encoded images for ``model``'s featurizer.

    ``string_tensor``: tf.string of any shape (a placeholder of unknown shape too); every element is
    one JPEG, PNG, GIF or BMP image. Returns float32 ``(N, size, size, 3)`` with N the number of
    strings. ``model``: a zoo model or its name ("resnet50", the notebook's default;
    "efficientnet-lite0"; "none" for RGB in [0, 255]); ``size`` overrides the square side.
    """
    import tensorflow as tf

    spec = get_preprocessing(model)
    side = size or spec.size
    ratio = side / (side + CROP_PADDING)

    def decode_crop_resize(encoded: Any) -> Any:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        shape = tf.shape(image)
        height, width = shape[0], shape[1]
        # float64, as the numpy twin computes it, so both pick the same crop for every image size.
        crop = tf.cast(ratio * tf.cast(tf.minimum(height, width), tf.float64), tf.int32)
        crop = tf.maximum(crop, 1)
        window = tf.image.crop_to_bounding_box(
            image, (height - crop + 1) // 2, (width - crop + 1) // 2, crop, crop
        )
        resized = tf.image.resize(tf.cast(window, tf.float32), [side, side], method="bicubic")
        return tf.ensure_shape(resized, [side, side, 3])

    with tf.name_scope("preprocess_array"):
        source = tf.convert_to_tensor(string_tensor, dtype=tf.string)
        strings = tf.reshape(source, [-1])
        images = tf.map_fn(
            decode_crop_resize, strings, fn_output_signature=tf.TensorSpec([side, side, 3], tf.float32)
        )
        output = tf.identity(spec.normalize(images), name="images")
    if not tf.executing_eagerly():  # a graph (tf.compat.v1 or a tf.function trace): remember it
        from fpgaserve.sdk.host_lowering import preprocess_lowering, record

        record(source, output, preprocess_lowering(size=side, crop_padding=CROP_PADDING, preprocessing=spec))
    return output
