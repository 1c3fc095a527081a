"""The fpgaserve SDK: what a data scientist imports, with the names of the Brainwave notebooks.

Names are resolved lazily so that ``import fpgaserve.sdk`` stays cheap until a model is used.
The notebooks' import paths have twins: ``fpgaserve.sdk.models`` (and ``.models.utils``) for
``azureml.contrib.brainwave.models``, ``fpgaserve.sdk.pipeline`` for
``azureml.contrib.brainwave.pipeline``, and ``from fpgaserve.sdk import tf1 as tf`` for TensorFlow 1
(never imported implicitly: it disables TF2 behaviour process-wide).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BrainWaveStage": "fpgaserve.sdk.pipeline",
    "FpgaStage": "fpgaserve.sdk.pipeline",
    "KerasStage": "fpgaserve.sdk.pipeline",
    "ModelDefinition": "fpgaserve.sdk.pipeline",
    "PackageInfo": "fpgaserve.sdk.pipeline",
    "TensorflowStage": "fpgaserve.sdk.pipeline",
    "zoo_pipeline": "fpgaserve.sdk.pipeline",
    "preprocess_array": "fpgaserve.sdk.preprocessing",
    "QuantizedResnet50": "fpgaserve.sdk.zoo",
    "QuantizedEfficientNetLite0": "fpgaserve.sdk.zoo",
    "QuantizedModel": "fpgaserve.sdk.zoo",
    "Resnet50": "fpgaserve.sdk.zoo",
    "WeightsUnavailableError": "fpgaserve.sdk.zoo",
    "get_zoo_model": "fpgaserve.sdk.zoo",
    "imagenet_labels": "fpgaserve.sdk.labels",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fpgaserve.sdk' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
