"""The twin of ``azureml.core.webservice``."""

from __future__ import annotations

from fpgaserve.sdk.cluster.webservice import AksWebservice, Webservice

__all__ = ["AksWebservice", "Webservice"]
