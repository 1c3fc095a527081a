"""``fpgaserve.sdk.models.utils``: the notebook's ``azureml.contrib.brainwave.models.utils``.

Role: the import path of ``preprocess_array`` in the Brainwave notebooks
(``import fpgaserve.sdk.models.utils as utils; utils.preprocess_array(in_images)``).
"""

from __future__ import annotations

from fpgaserve.sdk.preprocessing import preprocess_array

__all__ = ["preprocess_array"]
