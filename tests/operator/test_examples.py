"""The example manifests in docs/examples are valid, and so is everything the operator builds
from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fpgaserve.api.crd_models import API_VERSION, MODEL_KIND, WEBSERVICE_KIND
from fpgaserve.operator.claims import build_resource_claim_template
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.networking import build_hpa, build_ingress, build_pdb, build_service
from fpgaserve.operator.secrets import build_keys_secret
from fpgaserve.operator.validation import parse_model, parse_webservice
from fpgaserve.operator.workload import build_deployment
from tests.operator.helpers import ROOT, assert_valid, assert_valid_custom

EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.yaml"))


def documents() -> list[dict[str, Any]]:
    return [doc for path in EXAMPLES for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_there_are_examples_of_both_kinds() -> None:
    kinds = {doc["kind"] for doc in documents()}
    assert {MODEL_KIND, WEBSERVICE_KIND} <= kinds


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["apiVersion"] == API_VERSION:
            assert_valid_custom(doc)
            (parse_model if doc["kind"] == MODEL_KIND else parse_webservice)(doc)
        else:
            assert_valid(doc)


def test_objects_built_from_the_examples_are_valid() -> None:
    docs = documents()
    models = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == MODEL_KIND}
    services = [d for d in docs if d["kind"] == WEBSERVICE_KIND]
    assert services
    for service in services:
        owner = {**service, "metadata": {**service["metadata"], "uid": "0000-example"}}
        spec = parse_webservice(owner)
        model = parse_model(models[service["metadata"]["namespace"], spec.model])
        built = [
            build_deployment(owner=owner, spec=spec, model=model, config=OperatorConfig()),
            build_service(owner=owner, spec=spec),
            build_keys_secret(owner=owner),
            *(b(owner=owner, spec=spec) for b in (build_ingress, build_hpa, build_pdb)),
        ]
        template = build_resource_claim_template(owner=owner, spec=spec, device_memory_bytes=40 << 20)
        assert (template is not None) == (spec.fpga.mode == "DRA")
        for obj in [*built, template]:
            if obj is None:
                continue
            if spec.fpga.mode == "DRA":  # resource.k8s.io/v1 and pod resourceClaims: Kubernetes 1.34
                kubernetes_validate.validate(obj, "1.34", strict=True)
            else:
                assert_valid(obj)
