"""Service, Ingress, HPA and PDB builders, and the URLs the status reports."""

from __future__ import annotations

from typing import Any

from fpgaserve.api.crd_models import FpgaWebserviceSpec
from fpgaserve.operator.networking import (
    BACKEND_PROTOCOL_ANNOTATION,
    build_grpc_ingress,
    build_hpa,
    build_ingress,
    build_pdb,
    build_service,
    external_url,
    internal_url,
)
from tests.operator.helpers import assert_valid, owner, webservice_body


def parts(**spec: Any) -> tuple[dict[str, Any], FpgaWebserviceSpec]:
    body = owner(webservice_body(**spec))
    return body, FpgaWebserviceSpec.model_validate(body["spec"])


def test_service() -> None:
    body, spec = parts()
    service = build_service(owner=body, spec=spec)
    assert_valid(service)
    assert service["metadata"]["name"] == "web"
    assert service["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert service["spec"] == {
        "type": "ClusterIP",
        "selector": {"fpgaserve.io/webservice": "web"},
        "ports": [
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
            {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP"},
        ],
    }
    body, spec = parts(tls={"mode": "SelfSigned"}, grpc={"enabled": False})
    assert build_service(owner=body, spec=spec)["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}
    ]


def test_grpc_ingress_on_the_http_host_routes_only_the_grpc_services() -> None:
    body, spec = parts(
        tls={"mode": "SelfSigned"},
        ingress={"host": "web.example.com", "className": "nginx", "tls": {"clusterIssuer": "le"}, "grpc": {}},
    )
    http, grpc = build_ingress(owner=body, spec=spec), build_grpc_ingress(owner=body, spec=spec)
    assert http is not None and grpc is not None
    assert_valid(grpc)
    assert grpc["metadata"]["name"] == "web-grpc"
    assert grpc["metadata"]["annotations"] == {
        BACKEND_PROTOCOL_ANNOTATION: "GRPCS",  # the server speaks TLS on its gRPC port too
        "cert-manager.io/cluster-issuer": "le",
    }
    (rule,) = grpc["spec"]["rules"]
    assert rule["host"] == "web.example.com"
    assert [p["path"] for p in rule["http"]["paths"]] == [
        "/inference.GRPCInferenceService",
        "/tensorflow.serving.PredictionService",
        "/grpc.health.v1.Health",
    ]
    assert {p["pathType"] for p in rule["http"]["paths"]} == {"Prefix"}
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": "web", "port": {"name": "grpc"}}}
    # The same host shares the HTTP Ingress's certificate; the HTTP Ingress is unchanged.
    assert grpc["spec"]["tls"] == http["spec"]["tls"]
    assert http["metadata"]["annotations"][BACKEND_PROTOCOL_ANNOTATION] == "HTTPS"


def test_grpc_ingress_on_a_host_of_its_own() -> None:
    body, spec = parts(
        ingress={
            "host": "web.example.com",
            "tls": {},
            "grpc": {"host": "grpc.example.com", "annotations": {"example.com/x": "y"}},
        },
    )
    grpc = build_grpc_ingress(owner=body, spec=spec)
    assert grpc is not None
    assert_valid(grpc)
    assert grpc["metadata"]["annotations"] == {BACKEND_PROTOCOL_ANNOTATION: "GRPC", "example.com/x": "y"}
    (rule,) = grpc["spec"]["rules"]
    assert rule["host"] == "grpc.example.com" and [p["path"] for p in rule["http"]["paths"]] == ["/"]
    assert grpc["spec"]["tls"] == [{"hosts": ["grpc.example.com"], "secretName": "web-grpc-ingress-tls"}]
    body, spec = parts(ingress={"host": "web.example.com"})
    assert build_grpc_ingress(owner=body, spec=spec) is None


def test_grpc_ingress_needs_the_grpc_port() -> None:
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match=r"needs grpc\.enabled"):
        parts(grpc={"enabled": False}, ingress={"host": "web.example.com", "grpc": {}})


def test_no_ingress_hpa_or_pdb_by_default() -> None:
    body, spec = parts()
    assert build_ingress(owner=body, spec=spec) is None
    assert build_hpa(owner=body, spec=spec) is None
    assert build_pdb(owner=body, spec=spec) is None
    assert external_url(spec) is None


def test_ingress_with_cert_manager() -> None:
    body, spec = parts(
        tls={"mode": "SelfSigned"},
        ingress={
            "host": "web.example.com",
            "className": "nginx",
            "annotations": {"example.com/team": "vision"},
            "tls": {"clusterIssuer": "letsencrypt"},
        },
    )
    ingress = build_ingress(owner=body, spec=spec)
    assert ingress is not None
    assert_valid(ingress)
    assert ingress["metadata"]["annotations"] == {
        "example.com/team": "vision",
        BACKEND_PROTOCOL_ANNOTATION: "HTTPS",
        "cert-manager.io/cluster-issuer": "letsencrypt",
    }
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "web.example.com"
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": "web", "port": {"name": "https"}}}
    assert ingress["spec"]["tls"] == [{"hosts": ["web.example.com"], "secretName": "web-ingress-tls"}]
    assert external_url(spec) == "https://web.example.com/"


def test_plain_ingress() -> None:
    body, spec = parts(ingress={"host": "web.example.com", "path": "/resnet"})
    ingress = build_ingress(owner=body, spec=spec)
    assert ingress is not None
    assert_valid(ingress)
    assert "annotations" not in ingress["metadata"] and "tls" not in ingress["spec"]
    assert external_url(spec) == "http://web.example.com/resnet"


def test_autoscaling_and_disruption_budget() -> None:
    body, spec = parts(autoscale={"minReplicas": 2, "maxReplicas": 6, "targetUtilization": 50})
    hpa, pdb = build_hpa(owner=body, spec=spec), build_pdb(owner=body, spec=spec)
    assert hpa is not None and pdb is not None
    assert_valid(hpa)
    assert_valid(pdb)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 50,
    }
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {"fpgaserve.io/webservice": "web"}},
    }


def test_pdb_only_above_one_replica() -> None:
    assert build_pdb(owner=parts(replicas=1)[0], spec=parts(replicas=1)[1]) is None
    body, spec = parts(replicas=3)
    assert build_pdb(owner=body, spec=spec) is not None


def test_internal_url() -> None:
    _, spec = parts()
    assert internal_url(name="web", namespace="ns1", spec=spec, cluster_domain="cluster.local") == (
        "http://web.ns1.svc.cluster.local/"
    )
