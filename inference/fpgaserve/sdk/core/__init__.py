"""The twin of ``azureml.core``: ``from fpgaserve.sdk.core import Workspace`` (and ``.model``,
``.webservice`` as in Azure ML). No TensorFlow here."""

from __future__ import annotations

from fpgaserve.sdk.cluster.model import Model
from fpgaserve.sdk.cluster.webservice import Webservice
from fpgaserve.sdk.cluster.workspace import Workspace

__all__ = ["Model", "Webservice", "Workspace"]
