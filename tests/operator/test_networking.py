"""Service, Ingress, HPA and PDB builders, and the URLs the status reports."""

from __future__ import annotations

from typing import Any

from fpgaserve.api.crd_models import FpgaWebserviceSpec
from fpgaserve.operator.networking import (
    BACKEND_PROTOCOL_ANNOTATION,
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
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
    }
    body, spec = parts(tls={"mode": "SelfSigned"})
    assert build_service(owner=body, spec=spec)["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}
    ]


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
