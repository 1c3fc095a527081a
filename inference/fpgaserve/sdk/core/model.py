"""The twin of ``azureml.core.model``."""

from __future__ import annotations

from fpgaserve.sdk.cluster.model import Model

__all__ = ["Model"]
