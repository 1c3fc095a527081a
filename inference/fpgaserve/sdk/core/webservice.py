"""The twin of ``azureml.core.webservice``."""

from __future__ import annotations

from fpgaserve.sdk.cluster.flavours import AksWebservice
from fpgaserve.sdk.cluster.webservice import Webservice

__all__ = ["AksWebservice", "Webservice"]
