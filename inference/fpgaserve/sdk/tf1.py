"""``from fpgaserve.sdk import tf1 as tf``: TensorFlow 1 as the Brainwave notebooks used it.

Role: the one-line import change that lets notebook code (``tf.placeholder``, ``tf.Session``) run:
importing this module calls ``tf.compat.v1.disable_v2_behavior()`` for the whole process, then
exposes ``tf.compat.v1`` under the name ``tf``. It is the same as writing
``import tensorflow.compat.v1 as tf; tf.disable_v2_behavior()``. Import it only in notebook-style
programs: it turns eager execution off for everything else in the process (the SDK's own Keras and
SavedModel work switches back to eager where it needs to).
"""

from __future__ import annotations

from typing import Any

import tensorflow.compat.v1 as _tf

_tf.disable_v2_behavior()

__all__: list[str] = []  # everything of tf.compat.v1, through __getattr__


def __getattr__(name: str) -> Any:
    return getattr(_tf, name)


def __dir__() -> list[str]:
    return dir(_tf)
