"""Source credentials: a presigned URL never lands in a Deployment, and a source Secret's other
fields (binary ones included) never stop a model from reconciling."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from fpgaserve.api import serving
from fpgaserve.api.kinds import FPGAMODEL
from fpgaserve.cli.main import main
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.kube import Kube
from fpgaserve.operator.reconcile_model import reconcile_model
from fpgaserve.operator.reconcile_webservice import reconcile_webservice
from tests.operator.cluster import Cluster
from tests.operator.helpers import DIGEST, NAMESPACE, create, model_body, webservice_body

CONFIG = OperatorConfig()
SIGNATURE = "c0ffee-signature-0123456789abcdef"
PRESIGNED = (
    "https://store.example/models/resnet.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential=AKIAEXAMPLE%2F20260101&X-Amz-Signature={SIGNATURE}"
)


def live(cluster: Cluster, plural: str, name: str) -> dict[str, Any] | None:
    for (resource, _, obj_name), obj in cluster.objects.items():
        if str(resource.plural) == plural and obj_name == name and not obj.deleted:
            raw: dict[str, Any] = obj.raw
            return raw
    return None


async def test_a_presigned_url_reaches_storage_init_through_a_secret(cluster: Cluster, kube: Kube) -> None:
    await create(cluster, model_body(source={"uri": PRESIGNED, "sha256": DIGEST}))
    await kube.patch(FPGAMODEL, NAMESPACE, "resnet", {"status": {"phase": "Ready"}}, subresource="status")
    body = await create(cluster, webservice_body())
    outcome = await reconcile_webservice(kube=kube, config=CONFIG, body=body)
    assert outcome.error is None
    deployment = live(cluster, "deployments", "web")
    assert deployment is not None
    assert SIGNATURE not in json.dumps(deployment)  # readable by anyone who can read Deployments
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert "--uri" not in init["args"]
    assert init["env"] == [
        {
            "name": serving.SOURCE_URI_ENV,
            "valueFrom": {"secretKeyRef": {"name": "web-source", "key": serving.SOURCE_URI_KEY}},
        }
    ]
    secret = live(cluster, "secrets", "web-source")
    assert secret is not None
    assert base64.b64decode(secret["data"][serving.SOURCE_URI_KEY]).decode() == PRESIGNED
    assert secret["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    for event in outcome.events:
        assert SIGNATURE not in event.message


def test_storage_init_takes_its_uri_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import hashlib

    from tests.package.hostile import package

    pkg = package(tmp_path / "p.zip")
    digest = hashlib.sha256(pkg.read_bytes()).hexdigest()
    argv = serving.storage_init_argv(uri=None, sha256=digest, dest=str(tmp_path / "models"))
    assert main(argv) == 2 and serving.SOURCE_URI_ENV in capsys.readouterr().err
    monkeypatch.setenv(serving.SOURCE_URI_ENV, pkg.as_uri())
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "tiny"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def s3_model_with_secret(cluster: Cluster, kube: Kube, data: dict[str, str]) -> dict[str, Any]:
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "minio", "namespace": NAMESPACE},
            "data": data,
        }
    )
    # Port 9 on loopback refuses at once: the manifest read is Unreachable, which does not hold a model.
    source = {
        "uri": "s3://b/k.zip",
        "sha256": DIGEST,
        "secretRef": {"name": "minio"},
        "endpoint": "http://127.0.0.1:9",
    }
    return await create(cluster, model_body(source=source))


async def test_a_binary_field_the_operator_does_not_read_is_ignored(cluster: Cluster, kube: Kube) -> None:
    body = await s3_model_with_secret(
        cluster,
        kube,
        {
            "AWS_ACCESS_KEY_ID": b64(b"AKIAEXAMPLE"),
            "AWS_SECRET_ACCESS_KEY": b64(b"secret-key-value"),
            "ca.der": b64(b"\x30\x82\xff\xfe\x00\x01binary"),
        },
    )
    outcome = await reconcile_model(kube=kube, config=CONFIG, body=body)
    assert outcome.error is None, outcome.error
    assert outcome.status["phase"] == "Ready"


async def test_a_malformed_field_the_operator_reads_is_a_condition(cluster: Cluster, kube: Kube) -> None:
    body = await s3_model_with_secret(
        cluster,
        kube,
        {"AWS_ACCESS_KEY_ID": b64(b"AKIAEXAMPLE"), "AWS_SECRET_ACCESS_KEY": b64(b"\xffsecret\xfe")},
    )
    outcome = await reconcile_model(kube=kube, config=CONFIG, body=body)
    assert outcome.error is not None and outcome.error.reason == "SecretInvalid"
    assert "AWS_SECRET_ACCESS_KEY is not UTF-8 text" in outcome.error.message
    assert "secret\\xfe" not in repr(outcome.error.message) and "secret\xfe" not in outcome.error.message
    conditions = {c["type"]: c for c in outcome.status["conditions"]}
    assert any(c["reason"] == "SecretInvalid" and c["status"] == "False" for c in conditions.values())
