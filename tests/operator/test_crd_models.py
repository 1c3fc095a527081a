"""The CRD models parse what users write, apply the defaults, and refuse what cannot work."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fpgaserve.api.constants import DEFAULT_RESOURCE_NAME
from fpgaserve.api.crd_models import FpgaModelSpec, FpgaWebserviceSpec
from tests.operator.helpers import DIGEST


def test_webservice_defaults() -> None:
    spec = FpgaWebserviceSpec.model_validate({"model": "resnet"})
    assert spec.replicas == 1 and spec.autoscale is None
    assert spec.fpga.count == 1 and spec.fpga.resource_name == DEFAULT_RESOURCE_NAME
    assert spec.auth.enabled is True  # auth is on unless turned off
    assert spec.tls.mode == "Disabled" and not spec.tls.enabled
    assert spec.ingress is None and spec.image is None
    assert spec.min_replicas == 1


def test_webservice_camel_case_on_the_wire() -> None:
    spec = FpgaWebserviceSpec.model_validate(
        {
            "model": "m",
            "autoscale": {"minReplicas": 2, "maxReplicas": 5, "targetUtilization": 60},
            "batching": {"maxBatchSize": 16, "maxBatchDelayMs": 2},
            "tls": {"mode": "Secret", "secretName": "my-cert"},
            "ingress": {"host": "web.example.com", "className": "nginx", "tls": {"clusterIssuer": "le"}},
        }
    )
    assert spec.min_replicas == 2 and spec.batching.max_batch_size == 16
    assert spec.tls.secret_name == "my-cert" and spec.ingress is not None
    assert spec.ingress.class_name == "nginx"
    assert spec.model_dump(by_alias=True, exclude_defaults=True)["autoscale"] == {
        "minReplicas": 2,
        "maxReplicas": 5,
        "targetUtilization": 60,
    }


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"model": "m", "autoscale": {"minReplicas": 4, "maxReplicas": 2}}, "minReplicas must not exceed"),
        ({"model": "m", "tls": {"mode": "Secret"}}, "secretName is required"),
        ({"model": "m", "tls": {"mode": "Disabled", "secretName": "x"}}, "secretName is required"),
        ({"model": "m", "replicas": -1}, "greater than or equal"),
        ({"model": "Bad_Name"}, "pattern"),
        ({"model": "m", "resources": {"cpu": "lots"}}, "pattern"),
        ({"model": "m", "fpga": {"resourceName": "fpga"}}, "pattern"),
        ({"model": "m", "unknownField": 1}, "Extra inputs"),
    ],
)
def test_webservice_refusals(spec: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        FpgaWebserviceSpec.model_validate(spec)


def test_model_source() -> None:
    spec = FpgaModelSpec.model_validate(
        {
            "source": {
                "uri": "s3://models/resnet.zip",
                "sha256": DIGEST,
                "secretRef": {"name": "minio"},
                "endpoint": "http://minio.storage:9000",
            },
            "tags": {"team": "vision"},
        }
    )
    assert spec.source.scheme == "s3" and spec.source.secret_ref is not None
    assert spec.tags == {"team": "vision"} and spec.description == ""


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ({"uri": "ftp://host/x.zip", "sha256": DIGEST}, "pattern"),
        ({"uri": "https://host/x.zip", "sha256": DIGEST.upper()}, "pattern"),
        ({"uri": "https://host/x.zip", "sha256": DIGEST[:-1]}, "pattern"),
        ({"uri": "https://host/x.zip", "sha256": DIGEST, "endpoint": "http://minio:9000"}, "s3:// URIs only"),
    ],
)
def test_model_refusals(source: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        FpgaModelSpec.model_validate({"source": source})
