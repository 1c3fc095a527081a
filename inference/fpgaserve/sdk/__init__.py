"""The fpgaserve SDK: what a data scientist imports, with the names of the Brainwave notebooks.

Names are resolved lazily so that ``import fpgaserve.sdk`` stays cheap until a model is used.
The notebooks' import paths have twins: ``fpgaserve.sdk.models`` (and ``.models.utils``) for
``azureml.contrib.brainwave.models``, ``fpgaserve.sdk.pipeline`` for
``azureml.contrib.brainwave.pipeline``, ``fpgaserve.sdk`` itself for ``azureml.contrib.brainwave``
(``BrainwaveWebservice``, ``BrainwaveImage``), ``fpgaserve.sdk.core`` for ``azureml.core``,
``fpgaserve.sdk.exceptions`` for ``azureml.exceptions``, and ``from fpgaserve.sdk import tf1 as tf`` for TensorFlow 1
(never imported implicitly: it disables TF2 behaviour process-wide).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BrainwaveImage": "fpgaserve.sdk.cluster.flavours",
    "BrainwaveWebservice": "fpgaserve.sdk.cluster.flavours",
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

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and readers
    from fpgaserve.sdk.cluster.flavours import BrainwaveImage as BrainwaveImage
    from fpgaserve.sdk.cluster.flavours import BrainwaveWebservice as BrainwaveWebservice
    from fpgaserve.sdk.labels import imagenet_labels as imagenet_labels
    from fpgaserve.sdk.pipeline import BrainWaveStage as BrainWaveStage
    from fpgaserve.sdk.pipeline import FpgaStage as FpgaStage
    from fpgaserve.sdk.pipeline import KerasStage as KerasStage
    from fpgaserve.sdk.pipeline import ModelDefinition as ModelDefinition
    from fpgaserve.sdk.pipeline import PackageInfo as PackageInfo
    from fpgaserve.sdk.pipeline import TensorflowStage as TensorflowStage
    from fpgaserve.sdk.pipeline import zoo_pipeline as zoo_pipeline
    from fpgaserve.sdk.preprocessing import preprocess_array as preprocess_array
    from fpgaserve.sdk.zoo import QuantizedEfficientNetLite0 as QuantizedEfficientNetLite0
    from fpgaserve.sdk.zoo import QuantizedModel as QuantizedModel
    from fpgaserve.sdk.zoo import QuantizedResnet50 as QuantizedResnet50
    from fpgaserve.sdk.zoo import Resnet50 as Resnet50
    from fpgaserve.sdk.zoo import WeightsUnavailableError as WeightsUnavailableError
    from fpgaserve.sdk.zoo import get_zoo_model as get_zoo_model

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fpgaserve.sdk' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
