"""Helpers shared by the operator tests: example objects, validation, polling with a deadline."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import kmock
import kubernetes_validate
import yaml

from fpgaserve.api.crd_models import (
    API_VERSION,
    MODEL_KIND,
    WEBSERVICE_KIND,
    FpgaModelSpec,
    FpgaWebserviceSpec,
)
from tests.operator.cluster import Cluster

K8S_VERSION = "1.30"
ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = ROOT / "crds"
NAMESPACE = "ns1"
MODEL_URI = "s3://models/resnet/service_def.zip"
DIGEST = "0123456789abcdef" * 4
T = TypeVar("T")


def model_body(name: str = "resnet", **spec: Any) -> dict[str, Any]:
    """An FpgaModel as a user would apply it (s3://: a source the operator does not fetch itself)."""
    source = {"uri": MODEL_URI, "sha256": DIGEST}
    return {
        "apiVersion": API_VERSION,
        "kind": MODEL_KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"source": source, **spec},
    }


def webservice_body(name: str = "web", model: str = "resnet", **spec: Any) -> dict[str, Any]:
    """An FpgaWebservice as a user would apply it."""
    return {
        "apiVersion": API_VERSION,
        "kind": WEBSERVICE_KIND,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"model": model, **spec},
    }


def owner(body: dict[str, Any], uid: str = "uid-1") -> dict[str, Any]:
    """A body as the API server returns it (with a uid), for the builders."""
    out = copy.deepcopy(body)
    out["metadata"]["uid"] = uid
    return out


def assert_valid(obj: dict[str, Any]) -> None:
    """Valid for the Kubernetes API (strict: no unknown fields), or raise."""
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


async def create(cluster: Cluster, body: dict[str, Any]) -> dict[str, Any]:
    """Create an object through the API, as kubectl would."""
    plural = "fpgamodels" if body["kind"] == MODEL_KIND else "fpgawebservices"
    response = await cluster.post(f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/{plural}", json=body)
    assert response.status == 200, await response.text()
    created: dict[str, Any] = await response.json()
    return created


def crd_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of one of our kinds, from the committed CRD YAML."""
    for path in CRDS_DIR.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema
    raise LookupError(kind)


def assert_valid_custom(obj: dict[str, Any]) -> None:
    """An FpgaModel or FpgaWebservice valid for its CRD's schema and for the operator's models."""
    jsonschema.validate(obj, crd_schema(obj["kind"]))
    spec_model = FpgaModelSpec if obj["kind"] == MODEL_KIND else FpgaWebserviceSpec
    spec_model.model_validate(obj["spec"])


def events_for(cluster: Cluster, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events posted about the object ``name``, oldest first."""
    out = []
    for (resource, _, _), obj in cluster.objects.items():
        if (
            resource.plural == "events"
            and not obj.deleted
            and obj.raw.get("involvedObject", {}).get("name") == name
        ):
            out.append((obj.raw.get("type", ""), obj.raw.get("reason", ""), obj.raw.get("message", "")))
    return out


def writes_to(cluster: Cluster, *plurals: str, by: str | None = None) -> list[str]:
    """POST/PATCH/DELETE requests so far to these resources (all when none given); only those of
    the operator started with ``token=by`` when given."""
    return [
        f"{r.method.value} {r.url.path}"
        for r in cluster
        if r.method.value in ("POST", "PATCH", "DELETE")
        and r.resource is not None
        and (not plurals or r.resource.plural in plurals)
        and (by is None or sent_by(r) == by)
    ]


def sent_by(request: kmock.Request) -> str | None:
    """The bearer token of a request: which operator sent it (see ``start_operator``)."""
    headers = {key.lower(): value for key, value in request.headers.items()}
    auth = headers.get("authorization", "")
    return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
