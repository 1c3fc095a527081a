"""The building blocks of the CRD models: their base model, wire patterns and schema helpers.

Role: what ``fpgaserve.api.crd_models`` declares its fields with: the pydantic base every CRD model
shares (camelCase aliases, unknown fields refused), the patterns of Kubernetes names and quantities,
and the helpers that add a CEL validation rule or an empty-object default to a field's schema.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "QUANTITY",
    "RESOURCE_NAME",
    "SHA256",
    "SOURCE_URI",
    "CrdModel",
    "LabelName",
    "Quantity",
    "SubdomainName",
    "cel_rule",
    "empty_object_default",
]

# An RFC 1123 label (names of objects in the same namespace) and subdomain (Secrets, hosts).
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A Kubernetes quantity in the forms people write for CPU and memory ("500m", "2", "1.5Gi").
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
# An extended resource name: a domain-qualified name such as fpgaserve.io/fpga.
RESOURCE_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
SOURCE_URI = r"^(https?|s3|pvc|file)://\S+$"
SHA256 = r"^[a-f0-9]{64}$"

LabelName = Annotated[str, Field(pattern=DNS_LABEL, min_length=1, max_length=63)]
SubdomainName = Annotated[str, Field(pattern=DNS_SUBDOMAIN, min_length=1, max_length=253)]
Quantity = Annotated[str, Field(pattern=QUANTITY, max_length=32)]


class CrdModel(BaseModel):
    """The base of every CRD model: camelCase on the wire, unknown fields refused, immutable."""

    # Unknown fields are an error: the API server prunes them before the operator sees an object,
    # so one that arrives anyway comes from a stale CRD or a hand-made object.
    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


def cel_rule(rule: str, message: str) -> dict[str, Any]:
    # The same rule as the model validator beside it, for the API server (CRD validation rules).
    return {"x-kubernetes-validations": [{"rule": rule, "message": message}]}


def empty_object_default() -> dict[str, Any]:
    # Lets the API server default the nested fields of an object the user left out.
    return {"default": {}}
