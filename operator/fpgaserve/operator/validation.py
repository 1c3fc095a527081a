"""Checking FpgaModel and FpgaWebservice objects before anything is built from them.

Role: called first by every reconciler (``fpgaserve.operator.reconcile_webservice``). It parses the spec with
the CRD's own pydantic models and adds the checks a schema cannot make (the object's name must
suit a Service, a source URI must have the parts its scheme needs). A failure is a ``SpecError``
with a CamelCase reason and a message that names the field, never its value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from fpgaserve.api.crd_models import FpgaModelSpec, FpgaWebserviceSpec
from fpgaserve.operator.workload import resolve_source

__all__ = ["SpecError", "parse_model", "parse_webservice"]

# A Service name is an RFC 1035 label; the Deployment, Service, Ingress, HPA and PDB share it.
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MAX_NAME = 63


class SpecError(ValueError):
    """An object the operator cannot act on until someone changes it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _parse(model: type[BaseModel], body: Mapping[str, Any], what: str) -> Any:
    try:
        return model.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{what}.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            if error["loc"]
            else error["msg"]
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise SpecError("InvalidSpec", problems) from None


def parse_webservice(body: Mapping[str, Any]) -> FpgaWebserviceSpec:
    """The web service's spec, or SpecError."""
    name = body["metadata"]["name"]
    if not _SERVICE_NAME.match(name) or len(name) > _MAX_NAME:
        raise SpecError(
            "InvalidName",
            f"the name must be a DNS-1035 label of at most {_MAX_NAME} characters "
            "(lower-case letters, digits and '-', starting with a letter): it names the Service",
        )
    spec: FpgaWebserviceSpec = _parse(FpgaWebserviceSpec, body, "spec")
    return spec


def parse_model(body: Mapping[str, Any]) -> FpgaModelSpec:
    """The model's spec, with its source URI checked, or SpecError."""
    spec: FpgaModelSpec = _parse(FpgaModelSpec, body, "spec")
    try:
        resolve_source(spec.source)
    except ValueError as exc:
        raise SpecError("InvalidSource", f"spec.source.uri: {exc}") from None
    return spec
