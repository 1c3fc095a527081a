"""Reconcilers against kmock's emulator, without kopf: what they write, and what they do not."""

from __future__ import annotations

from typing import Any

from fpgaserve.api.kinds import FPGAMODEL, FPGAWEBSERVICE, SECRET, SERVICE
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.cycle import Outcome
from fpgaserve.operator.kube import Kube
from fpgaserve.operator.reconcile_model import reconcile_model, release_model
from fpgaserve.operator.reconcile_webservice import reconcile_webservice, regenerate_key
from fpgaserve.operator.secrets import TLS_HOSTS_ANNOTATION
from tests.operator.cluster import Cluster
from tests.operator.helpers import NAMESPACE, assert_valid, create, model_body, webservice_body

CONFIG = OperatorConfig()
OWNED = ("apps/v1/deployments", "v1/services", "v1/secrets", "networking.k8s.io/v1/ingresses",
         "autoscaling/v2/horizontalpodautoscalers", "policy/v1/poddisruptionbudgets")  # fmt: skip


async def ready_model(cluster: Cluster, kube: Kube, **spec: Any) -> dict[str, Any]:
    model = await create(cluster, model_body(**spec))
    await kube.patch(FPGAMODEL, NAMESPACE, "resnet", {"status": {"phase": "Ready"}}, subresource="status")
    return model


def applied(body: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    """The body after kopf would have applied the outcome's status patch."""
    status = {k: v for k, v in {**(body.get("status") or {}), **outcome.status}.items() if v is not None}
    return {**body, "status": status}


def writes(cluster: Cluster) -> list[str]:
    return [
        f"{r.method.value} {r.url.path}" for r in cluster if r.method.value in ("POST", "PATCH", "DELETE")
    ]


def owned(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """Every live object the web service owns, by "plural/name"."""
    out = {}
    for (resource, _, name), obj in cluster.objects.items():
        if not obj.deleted and str(resource.plural) in {r.rsplit("/", 1)[1] for r in OWNED}:
            out[f"{resource.plural}/{name}"] = obj.raw
    return out


async def test_missing_model_waits_with_a_reason(cluster: Cluster, kube: Kube) -> None:
    body = await create(cluster, webservice_body())
    outcome = await reconcile_webservice(kube=kube, config=CONFIG, body=body)
    assert (
        outcome.error is not None and outcome.error.reason == "ModelNotFound" and not outcome.error.permanent
    )
    assert outcome.status["phase"] == "Pending"
    assert owned(cluster) == {}
    assert [(e.type, e.reason) for e in outcome.events] == [("Warning", "ModelNotFound")]


async def test_creates_then_writes_nothing(cluster: Cluster, kube: Kube) -> None:
    await ready_model(cluster, kube)
    body = await create(cluster, webservice_body())
    outcome = await reconcile_webservice(kube=kube, config=CONFIG, body=body)
    assert outcome.error is None
    assert set(owned(cluster)) == {"deployments/web", "services/web", "secrets/web-keys"}
    for obj in owned(cluster).values():
        assert_valid({k: v for k, v in obj.items() if k != "status"})
        assert obj["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    assert outcome.status["phase"] == "Deploying" and outcome.status["keysSecret"] == "web-keys"
    assert {e.reason for e in outcome.events} >= {"Created", "Deploying"}
    before = len(writes(cluster))
    again = await reconcile_webservice(kube=kube, config=CONFIG, body=applied(body, outcome))
    assert (again.status, again.events, again.error) == ({}, [], None)
    assert len(writes(cluster)) == before


async def test_a_change_undone_after_this_spec_and_model_were_applied_is_drift(
    cluster: Cluster, kube: Kube
) -> None:
    # Whatever starts the cycle (a resync, a watched object, a pending retry of the change handler).
    await ready_model(cluster, kube)
    body = await create(cluster, webservice_body())
    body = applied(body, await reconcile_webservice(kube=kube, config=CONFIG, body=body))
    await kube.delete(SERVICE, NAMESPACE, "web")
    outcome = await reconcile_webservice(kube=kube, config=CONFIG, body=body)
    assert [(e.reason, e.message) for e in outcome.events] == [
        ("DriftCorrected", "Service web was missing; restored")
    ]
    # A new model for the same spec is a rollout, not drift.
    await kube.patch(FPGAMODEL, NAMESPACE, "resnet", {"spec": {"source": {"sha256": "b" * 64}}})
    outcome = await reconcile_webservice(kube=kube, config=CONFIG, body=body)
    assert [(e.reason, e.message) for e in outcome.events] == [("Updated", "Deployment web")]


async def test_spec_changes_add_and_remove_objects(cluster: Cluster, kube: Kube) -> None:
    await ready_model(cluster, kube)
    body = await create(cluster, webservice_body())
    body = applied(body, await reconcile_webservice(kube=kube, config=CONFIG, body=body))
    bigger = {**body, "spec": {**body["spec"], "autoscale": {"minReplicas": 2, "maxReplicas": 4},
                               "ingress": {"host": "web.example.com"}, "tls": {"mode": "SelfSigned"}}}  # fmt: skip
    outcome = await reconcile_webservice(kube=kube, config=CONFIG, body=bigger)
    assert set(owned(cluster)) == {
        "deployments/web", "services/web", "secrets/web-keys", "secrets/web-tls",
        "ingresses/web", "horizontalpodautoscalers/web", "poddisruptionbudgets/web",
    }  # fmt: skip
    assert outcome.status["url"] == "http://web.example.com/"
    assert outcome.status["internalUrl"] == "https://web.ns1.svc.cluster.local/"
    tls = owned(cluster)["secrets/web-tls"]
    assert "web.example.com" in tls["metadata"]["annotations"][TLS_HOSTS_ANNOTATION]
    smaller = {**body, "spec": {**body["spec"], "auth": {"enabled": False}}}
    outcome = await reconcile_webservice(
        kube=kube, config=CONFIG, body=applied(bigger, outcome) | {"spec": smaller["spec"]}
    )
    assert set(owned(cluster)) == {"deployments/web", "services/web"}
    assert outcome.status["url"] is None and outcome.status["keysSecret"] is None
    assert sorted(e.message for e in outcome.events if e.reason == "Deleted") == [
        "HorizontalPodAutoscaler web", "Ingress web", "PodDisruptionBudget web", "Secret web-keys", "Secret web-tls",
    ]  # fmt: skip


async def test_invalid_spec_is_permanent(cluster: Cluster, kube: Kube) -> None:
    body = await create(cluster, webservice_body(replicas=-3))
    outcome = await reconcile_webservice(kube=kube, config=CONFIG, body=body)
    assert outcome.error is not None and outcome.error.permanent and outcome.error.reason == "InvalidSpec"
    assert outcome.status["phase"] == "Failed"
    assert owned(cluster) == {}


async def test_foreign_object_is_not_taken_over(cluster: Cluster, kube: Kube) -> None:
    await ready_model(cluster, kube)
    await kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NAMESPACE},
                       "spec": {"ports": [{"port": 1}]}})  # fmt: skip
    body = await create(cluster, webservice_body())
    outcome = await reconcile_webservice(kube=kube, config=CONFIG, body=body)
    assert outcome.error is not None and outcome.error.reason == "NotOwned"
    assert cluster.live("v1/services", NAMESPACE, "web")["spec"] == {"ports": [{"port": 1}]}  # type: ignore[index]


async def test_regenerate_key(cluster: Cluster, kube: Kube) -> None:
    await ready_model(cluster, kube)
    body = await create(cluster, webservice_body())
    await reconcile_webservice(kube=kube, config=CONFIG, body=body)
    before = (await kube.get(SECRET, NAMESPACE, "web-keys"))["data"]  # type: ignore[index]
    outcome = await regenerate_key(kube=kube, body=body, slot="secondary")
    assert [e.reason for e in outcome.events] == ["KeyRegenerated"]
    assert (await kube.get(SECRET, NAMESPACE, "web-keys"))["data"] != before  # type: ignore[index]
    for event in outcome.events:
        assert before["keys.json"] not in event.message
    wrong = await regenerate_key(kube=kube, body=body, slot="tertiary")
    assert [e.reason for e in wrong.events] == ["InvalidKeyName"] and wrong.error is None
    no_auth = {**body, "spec": {**body["spec"], "auth": {"enabled": False}}}
    refused = await regenerate_key(kube=kube, body=no_auth, slot="primary")
    assert [e.reason for e in refused.events] == ["AuthDisabled"] and refused.error is None


async def test_model_checks_its_secret_and_users(cluster: Cluster, kube: Kube) -> None:
    body = await create(cluster, model_body(source={"uri": "s3://b/k.zip", "sha256": "a" * 64,
                                                    "secretRef": {"name": "minio"}}))  # fmt: skip
    await create(cluster, webservice_body(name="web-a"))
    await create(cluster, webservice_body(name="web-b"))
    await create(cluster, webservice_body(name="other", model="another"))
    outcome = await reconcile_model(kube=kube, config=CONFIG, body=body)
    assert outcome.error is not None and outcome.error.reason == "SecretNotFound"
    assert outcome.status["phase"] == "Pending" and outcome.status["usedBy"] == ["web-a", "web-b"]
    await kube.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "minio", "namespace": NAMESPACE}}
    )
    outcome = await reconcile_model(kube=kube, config=CONFIG, body=applied(body, outcome))
    assert outcome.error is None and outcome.status["phase"] == "Ready"


async def test_release_is_held_while_in_use(cluster: Cluster, kube: Kube) -> None:
    model = await create(cluster, model_body())
    await create(cluster, webservice_body())
    held = await release_model(kube=kube, config=CONFIG, body=model)
    assert held.error is not None and held.error.reason == "InUse" and "web" in held.error.message
    assert held.status["phase"] == "Terminating"
    assert await kube.delete(FPGAWEBSERVICE, NAMESPACE, "web")
    released = await release_model(kube=kube, config=CONFIG, body=model)
    assert released.error is None and [e.reason for e in released.events] == ["Released"]
