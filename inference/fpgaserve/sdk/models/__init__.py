"""``fpgaserve.sdk.models``: the notebook's ``azureml.contrib.brainwave.models`` import path.

Role: re-exports the zoo under the names the Brainwave notebooks import
(``from fpgaserve.sdk.models import QuantizedResnet50, Resnet50``); ``fpgaserve.sdk.models.utils``
holds ``preprocess_array``.
"""

from __future__ import annotations

from fpgaserve.sdk.zoo import (
    QuantizedEfficientNetLite0,
    QuantizedModel,
    QuantizedResnet50,
    Resnet50,
    WeightsUnavailableError,
    get_zoo_model,
)

__all__ = [
    "QuantizedEfficientNetLite0",
    "QuantizedModel",
    "QuantizedResnet50",
    "Resnet50",
    "WeightsUnavailableError",
    "get_zoo_model",
]
