"""Spec checks beyond the schema, with messages that name fields and never echo values."""

from __future__ import annotations

import pytest

from fpgaserve.operator.validation import SpecError, parse_model, parse_webservice
from tests.operator.helpers import DIGEST, model_body, webservice_body


def test_valid_objects_parse() -> None:
    assert parse_webservice(webservice_body()).model == "resnet"
    assert parse_model(model_body()).source.sha256 == DIGEST


@pytest.mark.parametrize("name", ["1web", "Web", "a" * 64, "web.example"])
def test_webservice_name_must_suit_a_service(name: str) -> None:
    body = webservice_body(name=name)
    with pytest.raises(SpecError) as info:
        parse_webservice(body)
    assert info.value.reason == "InvalidName"


def test_invalid_spec_names_the_field_without_its_value() -> None:
    body = webservice_body(replicas="many-secret-replicas")
    with pytest.raises(SpecError) as info:
        parse_webservice(body)
    assert info.value.reason == "InvalidSpec"
    assert "spec.replicas" in info.value.message
    assert "many-secret-replicas" not in info.value.message


def test_model_source_shape() -> None:
    body = model_body()
    body["spec"]["source"]["uri"] = "https://user:hunter2@models.example.com/x.zip"
    with pytest.raises(SpecError) as info:
        parse_model(body)
    assert info.value.reason == "InvalidSource" and "hunter2" not in info.value.message
    body["spec"]["source"]["uri"] = "pvc://only-a-claim"
    with pytest.raises(SpecError, match="pvc://CLAIM/PATH"):
        parse_model(body)
