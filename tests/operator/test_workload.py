"""The Deployment builder: the pod template follows the serving contract to the letter."""

from __future__ import annotations

from typing import Any

import pytest

from fpgaserve.api import serving
from fpgaserve.api.constants import ENV_REQUIRE_DEVICE
from fpgaserve.api.crd_models import FpgaModelSpec, FpgaWebserviceSpec
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.workload import (
    IMAGE_UID,
    MODEL_DIGEST_ANNOTATION,
    build_deployment,
    canonical_quantity,
    resolve_source,
)
from tests.operator.helpers import DIGEST, MODEL_URI, assert_valid, model_body, owner, webservice_body

CONFIG = OperatorConfig(image="registry.example/fpgaserve:1.2.3")


def deployment(ws_spec: dict[str, Any] | None = None, source: dict[str, Any] | None = None) -> dict[str, Any]:
    body = owner(webservice_body(**(ws_spec or {})))
    model = model_body()
    if source is not None:
        model["spec"]["source"] = {"sha256": DIGEST, **source}
    obj = build_deployment(
        owner=body,
        spec=FpgaWebserviceSpec.model_validate(body["spec"]),
        model=FpgaModelSpec.model_validate(model["spec"]),
        config=CONFIG,
    )
    assert_valid(obj)
    return obj


def containers(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = obj["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    return init, server


def mounts(container: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    return {m["name"]: (m["mountPath"], m.get("readOnly", False)) for m in container["volumeMounts"]}


def test_defaults() -> None:
    obj = deployment()
    assert obj["metadata"]["name"] == "web" and obj["metadata"]["namespace"] == "ns1"
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "fpgaserve.io/v1alpha1", "kind": "FpgaWebservice", "name": "web", "uid": "uid-1",
         "controller": True, "blockOwnerDeletion": True},
    ]  # fmt: skip
    assert obj["spec"]["replicas"] == 1
    assert obj["spec"]["selector"] == {"matchLabels": {"fpgaserve.io/webservice": "web"}}
    template = obj["spec"]["template"]
    assert template["metadata"]["labels"]["fpgaserve.io/webservice"] == "web"
    assert template["metadata"]["annotations"][MODEL_DIGEST_ANNOTATION] == f"sha256:{DIGEST}"
    init, server = containers(obj)
    assert init["name"] == "storage-init" and server["name"] == "server"
    assert init["image"] == server["image"] == CONFIG.image
    assert init["args"] == serving.storage_init_argv(
        uri=MODEL_URI, sha256=DIGEST, dest=serving.MODEL_DIR, termination_log=serving.TERMINATION_LOG
    )
    for container in (init, server):  # why it failed reaches the status (diagnosis.py)
        assert container["terminationMessagePath"] == serving.TERMINATION_LOG
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert server["args"] == serving.serve_argv(
        port=serving.HTTP_PORT, grpc_port=serving.GRPC_PORT, keys=True, max_batch_size=8,
        max_batch_delay_ms=5, max_queue=256, max_body_bytes=16 * 1024 * 1024,
        max_image_pixels=4096 * 4096, request_timeout_s=30, drain_s=5, shutdown_timeout_s=10,
    )  # fmt: skip
    # The grace period covers the drain period and the in-flight requests after it.
    assert template["spec"]["terminationGracePeriodSeconds"] == 5 + 10 + 5
    assert server["ports"] == [
        {"name": "http", "containerPort": serving.HTTP_PORT, "protocol": "TCP"},
        {"name": "grpc", "containerPort": serving.GRPC_PORT, "protocol": "TCP"},
    ]
    assert server["readinessProbe"]["httpGet"] == {
        "path": serving.READINESS_PATH,
        "port": "http",
        "scheme": "HTTP",
    }
    assert server["livenessProbe"]["httpGet"]["path"] == serving.LIVENESS_PATH
    assert mounts(init)["model"] == (serving.MODEL_DIR, False)
    assert mounts(server)["model"] == (serving.MODEL_DIR, True)
    assert mounts(server)["keys"] == (serving.KEYS_DIR, True)
    assert "tls" not in mounts(server)


def test_keys_and_tls_files_land_on_the_contract_paths() -> None:
    obj = deployment({"tls": {"mode": "SelfSigned"}})
    volumes = {v["name"]: v for v in obj["spec"]["template"]["spec"]["volumes"]}
    keys = volumes["keys"]["secret"]
    assert keys["secretName"] == "web-keys"
    assert [f"{serving.KEYS_DIR}/{item['path']}" for item in keys["items"]] == [serving.KEYS_FILE]
    tls = volumes["tls"]["secret"]
    assert tls["secretName"] == "web-tls"
    assert {f"{serving.TLS_DIR}/{i['path']}" for i in tls["items"]} == {
        serving.TLS_CERT_FILE,
        serving.TLS_KEY_FILE,
    }
    _, server = containers(obj)
    assert server["ports"][0] == {"name": "https", "containerPort": serving.HTTPS_PORT, "protocol": "TCP"}
    assert server["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert server["args"][server["args"].index("--tls-cert") + 1] == serving.TLS_CERT_FILE


def test_user_tls_secret_and_no_auth() -> None:
    obj = deployment({"tls": {"mode": "Secret", "secretName": "my-cert"}, "auth": {"enabled": False}})
    volumes = {v["name"]: v for v in obj["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "my-cert"
    assert "keys" not in volumes
    _, server = containers(obj)
    assert "--keys-file" not in server["args"]


def test_security() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert pod["automountServiceAccountToken"] is False
    for container in (*pod["initContainers"], *pod["containers"]):
        assert container["securityContext"] == {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert mounts(container)["tmp"] == ("/tmp", False)  # the one writable place


def test_fpga_resources() -> None:
    _, server = containers(deployment({"fpga": {"count": 2, "resourceName": "example.com/fpga"}}))
    assert server["resources"]["limits"]["example.com/fpga"] == "2"
    assert server["resources"]["requests"]["example.com/fpga"] == "2"
    assert server["env"] == [{"name": ENV_REQUIRE_DEVICE, "value": "1"}]
    _, cpu_only = containers(deployment({"fpga": {"count": 0}}))
    assert cpu_only["env"] == [] and "fpgaserve.io/fpga" not in cpu_only["resources"]["limits"]


def test_cpu_and_memory() -> None:
    _, server = containers(deployment({"resources": {"cpu": "0.5", "memory": "1.5Gi", "cpuLimit": "2"}}))
    assert server["resources"]["requests"] == {"cpu": "500m", "memory": "1536Mi", "fpgaserve.io/fpga": "1"}
    assert server["resources"]["limits"] == {"memory": "1536Mi", "cpu": "2", "fpgaserve.io/fpga": "1"}


def test_autoscaled_deployment_leaves_replicas_to_the_hpa() -> None:
    obj = deployment({"autoscale": {"minReplicas": 2, "maxReplicas": 4}})
    assert "replicas" not in obj["spec"]


def test_overrides() -> None:
    init, server = containers(deployment({"image": "mine:dev", "imagePullPolicy": "Always"}))
    assert init["image"] == server["image"] == "mine:dev"
    assert init["imagePullPolicy"] == server["imagePullPolicy"] == "Always"


def test_the_pixel_limit_and_drain_period_reach_the_server() -> None:
    obj = deployment({"server": {"maxImagePixels": 1_000_000, "drainSeconds": 20}})
    _, server = containers(obj)
    assert server["args"][server["args"].index("--max-image-pixels") + 1] == "1000000"
    assert server["args"][server["args"].index("--drain-s") + 1] == "20"
    assert obj["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 20 + 10 + 5


def test_s3_source_with_credentials() -> None:
    obj = deployment(
        source={"uri": "s3://models/r.zip", "secretRef": {"name": "minio"}, "endpoint": "http://minio:9000"}
    )
    init, server = containers(obj)
    assert init["args"] == serving.storage_init_argv(
        uri="s3://models/r.zip",
        sha256=DIGEST,
        credentials_dir=serving.CREDENTIALS_DIR,
        endpoint="http://minio:9000",
        termination_log=serving.TERMINATION_LOG,
    )
    assert mounts(init)["credentials"] == (serving.CREDENTIALS_DIR, True)
    assert "credentials" not in mounts(server)  # only storage-init sees the store's credentials


def test_pvc_source() -> None:
    obj = deployment(source={"uri": "pvc://models-claim/team/resnet.zip"})
    init, _ = containers(obj)
    volumes = {v["name"]: v for v in obj["spec"]["template"]["spec"]["volumes"]}
    assert volumes["source"]["persistentVolumeClaim"] == {"claimName": "models-claim", "readOnly": True}
    assert mounts(init)["source"] == (serving.SOURCE_DIR, True)
    assert init["args"][init["args"].index("--uri") + 1] == f"file://{serving.SOURCE_DIR}/team/resnet.zip"


def test_file_source_for_single_node_clusters() -> None:
    obj = deployment(source={"uri": "file:///data/models/resnet.zip"})
    init, _ = containers(obj)
    volumes = {v["name"]: v for v in obj["spec"]["template"]["spec"]["volumes"]}
    assert volumes["source"]["hostPath"] == {"path": "/data/models", "type": "Directory"}
    assert init["args"][init["args"].index("--uri") + 1] == f"file://{serving.SOURCE_DIR}/resnet.zip"


@pytest.mark.parametrize(
    "uri",
    ["pvc://claim-only", "file://host/x.zip", "file:///", "s3://bucket-only", "https://user:pw@host/x.zip"],
)
def test_malformed_sources(uri: str) -> None:
    with pytest.raises(ValueError) as info:
        resolve_source(FpgaModelSpec.model_validate({"source": {"uri": uri, "sha256": DIGEST}}).source)
    assert "pw" not in str(info.value)  # a URI may hold a credential: never echoed


@pytest.mark.parametrize(
    ("given", "stored"),
    [("1", "1"), ("0.5", "500m"), ("500m", "500m"), ("1000m", "1"), ("2Gi", "2Gi"), ("2048Mi", "2Gi"),
     ("1.5Gi", "1536Mi"), ("1000M", "1G"), ("100M", "100M"), ("1.5", "1500m")],
)  # fmt: skip
def test_canonical_quantity(given: str, stored: str) -> None:
    assert canonical_quantity(given) == stored
