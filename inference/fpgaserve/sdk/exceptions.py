"""The SDK's exceptions under Azure ML's names: the twin of ``azureml.exceptions``.

Role: what ``Model``, ``Webservice`` and the CLI raise, so that a notebook's
``except WebserviceException:`` ports by changing its import.
"""

from __future__ import annotations

from fpgaserve.api.errors import UserError

__all__ = ["AzureMLException", "ModelException", "ModelInUseException", "WebserviceException"]


class AzureMLException(UserError):
    """Any failure of a workspace operation (a ``UserError``: the CLI prints its message)."""


class ModelException(AzureMLException):
    """A model is missing, invalid, or failed to register."""


class ModelInUseException(ModelException):
    """A model cannot be deleted while web services deploy it (``services`` names them)."""

    def __init__(self, message: str, *, services: list[str]) -> None:
        super().__init__(message)
        self.services = services


class WebserviceException(AzureMLException):
    """A web service is missing or failed; ``reason`` is its machine-readable reason when known."""

    def __init__(self, message: str, *, reason: str | None = None, logs: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.logs = logs
