"""The real kopf operator, in this event loop, against kmock's emulator: the whole life cycle."""

from __future__ import annotations

import base64
import json
from typing import Any

from fpgaserve.api.crd_models import API_VERSION, REGENERATE_KEY_ANNOTATION
from fpgaserve.api.kinds import DEPLOYMENT, FPGAMODEL, FPGAWEBSERVICE, SERVICE
from fpgaserve.api.serving import KEYS_PRIMARY, KEYS_SECONDARY
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.kube import Kube
from tests.operator.cluster import Cluster
from tests.operator.conftest import StartOperator
from tests.operator.helpers import (
    DIGEST,
    NAMESPACE,
    create,
    events_for,
    model_body,
    webservice_body,
    writes_to,
)
from tests.support.polling import eventually

WS = f"{API_VERSION}/fpgawebservices"
MODELS = f"{API_VERSION}/fpgamodels"
OWNED_PLURALS = (
    "deployments",
    "services",
    "secrets",
    "ingresses",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
)


def status(cluster: Cluster, resource: str, name: str) -> dict[str, Any]:
    return (cluster.live(resource, NAMESPACE, name) or {}).get("status") or {}


def condition(cluster: Cluster, resource: str, name: str, kind: str) -> dict[str, Any]:
    return next((c for c in status(cluster, resource, name).get("conditions", []) if c["type"] == kind), {})


def webservice_lists(cluster: Cluster) -> int:
    """How often web services were listed: once per model cycle (who uses the model?)."""
    return sum(1 for r in cluster if r.method.value == "GET" and r.url.path.endswith("/fpgawebservices"))


async def deployed(cluster: Cluster) -> dict[str, Any]:
    """Create a model and a web service; wait until the web service is deployed."""
    await create(cluster, model_body())
    await create(cluster, webservice_body())
    await eventually(lambda: status(cluster, WS, "web").get("phase") == "Deploying", what="web deploying")
    deployment = cluster.live("apps/v1/deployments", NAMESPACE, "web")
    assert deployment is not None
    return deployment


async def mark_available(kube: Kube, ready: int = 1) -> None:
    """Play the Deployment controller: the pods are up."""
    await kube.patch(
        DEPLOYMENT, NAMESPACE, "web",
        {"status": {"replicas": ready, "readyReplicas": ready,
                    "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}},
        subresource="status",
    )  # fmt: skip


async def test_create_deploy_and_become_ready(
    cluster: Cluster, kube: Kube, start_operator: StartOperator
) -> None:
    async with start_operator():
        deployment = await deployed(cluster)
        assert status(cluster, MODELS, "resnet")["phase"] == "Ready"
        assert cluster.live("v1/services", NAMESPACE, "web") is not None
        assert cluster.live("v1/secrets", NAMESPACE, "web-keys") is not None
        init = deployment["spec"]["template"]["spec"]["initContainers"][0]
        assert init["args"][init["args"].index("--sha256") + 1] == DIGEST
        await mark_available(kube)
        await eventually(lambda: status(cluster, WS, "web").get("phase") == "Ready", what="web ready")
        final = status(cluster, WS, "web")
        assert final["readyReplicas"] == 1 and final["modelDigest"] == f"sha256:{DIGEST}"
        assert condition(cluster, WS, "web", "Ready")["status"] == "True"
        await eventually(lambda: status(cluster, MODELS, "resnet").get("usedBy") == ["web"], what="usedBy")
        await eventually(
            lambda: {"Created", "Ready"} <= {reason for _, reason, _ in events_for(cluster, "web")},
            what=f"Events {events_for(cluster, 'web')}",
        )


async def test_update_rolls_out(cluster: Cluster, kube: Kube, start_operator: StartOperator) -> None:
    other_digest = "f" * 64
    async with start_operator():
        await deployed(cluster)
        await create(cluster, model_body(name="resnet-v2", source={
            "uri": "s3://models/v2.zip", "sha256": other_digest}))  # fmt: skip
        await eventually(
            lambda: status(cluster, MODELS, "resnet-v2").get("phase") == "Ready", what="v2 ready"
        )
        await kube.patch(FPGAWEBSERVICE, NAMESPACE, "web", {"spec": {
            "model": "resnet-v2", "replicas": 3, "tls": {"mode": "SelfSigned"}}})  # fmt: skip

        def rolled_out() -> bool:
            live = cluster.live("apps/v1/deployments", NAMESPACE, "web") or {}
            args = live["spec"]["template"]["spec"]["initContainers"][0]["args"]
            return live["spec"]["replicas"] == 3 and other_digest in args

        await eventually(rolled_out, what="new model and replicas in the Deployment")
        await eventually(lambda: cluster.live("v1/secrets", NAMESPACE, "web-tls"), what="certificate")
        await eventually(lambda: cluster.live("policy/v1/poddisruptionbudgets", NAMESPACE, "web"), what="pdb")
        await eventually(lambda: status(cluster, WS, "web").get("modelDigest") == f"sha256:{other_digest}")
        assert status(cluster, WS, "web")["observedGeneration"] == 2
        await kube.patch(
            FPGAWEBSERVICE, NAMESPACE, "web", {"spec": {"replicas": 1, "tls": {"mode": "Disabled"}}}
        )
        await eventually(lambda: cluster.live("policy/v1/poddisruptionbudgets", NAMESPACE, "web") is None)
        await eventually(lambda: cluster.live("v1/secrets", NAMESPACE, "web-tls") is None)


async def test_drift_is_corrected(cluster: Cluster, kube: Kube, start_operator: StartOperator) -> None:
    async with start_operator():
        await deployed(cluster)
        await kube.delete(SERVICE, NAMESPACE, "web")
        await kube.patch(DEPLOYMENT, NAMESPACE, "web", {"spec": {"replicas": 7}})
        await eventually(lambda: cluster.live("v1/services", NAMESPACE, "web"), what="service back")
        await eventually(
            lambda: (
                (cluster.live("apps/v1/deployments", NAMESPACE, "web") or {}).get("spec", {}).get("replicas")
                == 1
            ),
            what="replicas restored",
        )

        def reported(what: str) -> bool:
            return any(what in m for _, reason, m in events_for(cluster, "web") if reason == "DriftCorrected")

        await eventually(lambda: reported("Service web") and reported("Deployment web"), what="drift Events")


async def test_key_regeneration(cluster: Cluster, kube: Kube, start_operator: StartOperator) -> None:
    def keys() -> dict[str, str]:
        secret = cluster.live("v1/secrets", NAMESPACE, "web-keys") or {}
        parsed: dict[str, str] = json.loads(base64.b64decode(secret["data"]["keys.json"]))
        return parsed

    async with start_operator():
        await deployed(cluster)
        before = keys()
        await kube.patch(
            FPGAWEBSERVICE,
            NAMESPACE,
            "web",
            {"metadata": {"annotations": {REGENERATE_KEY_ANNOTATION: "secondary"}}},
        )
        await eventually(lambda: keys()[KEYS_SECONDARY] != before[KEYS_SECONDARY], what="new secondary key")
        assert keys()[KEYS_PRIMARY] == before[KEYS_PRIMARY]
        await eventually(
            lambda: (
                REGENERATE_KEY_ANNOTATION
                not in ((cluster.live(WS, NAMESPACE, "web") or {})["metadata"].get("annotations") or {})
            ),
            what="annotation consumed",
        )
    everything = json.dumps([cluster.live(WS, NAMESPACE, "web"), events_for(cluster, "web")])
    for key in (*before.values(), *keys().values()):
        assert key not in everything  # keys never reach the status or an Event


async def test_model_deletion_is_held_while_in_use(
    cluster: Cluster, kube: Kube, start_operator: StartOperator
) -> None:
    async with start_operator():
        await deployed(cluster)
        await kube.delete(FPGAMODEL, NAMESPACE, "resnet")
        await eventually(lambda: status(cluster, MODELS, "resnet").get("phase") == "Terminating", what="held")
        held = condition(cluster, MODELS, "resnet", "Deleting")
        assert held["reason"] == "InUse" and "FpgaWebservice web" in held["message"]
        assert status(cluster, MODELS, "resnet")["usedBy"] == ["web"]
        assert cluster.live(MODELS, NAMESPACE, "resnet") is not None  # the finalizer holds it
        await kube.delete(FPGAWEBSERVICE, NAMESPACE, "web")
        await eventually(lambda: cluster.live(WS, NAMESPACE, "web") is None, what="web service gone")
        await eventually(lambda: cluster.live(MODELS, NAMESPACE, "resnet") is None, what="model released")


async def test_cascade_delete(
    cluster: Cluster, kube: Kube, start_operator: StartOperator, config: OperatorConfig
) -> None:
    async with start_operator():
        await deployed(cluster)
        uid = cluster.live(WS, NAMESPACE, "web")["metadata"]["uid"]  # type: ignore[index]
        await kube.delete(FPGAWEBSERVICE, NAMESPACE, "web")
        await eventually(lambda: cluster.live(WS, NAMESPACE, "web") is None, what="web service gone")
        collected = await cluster.collect_garbage()  # the API server's garbage collector
        assert sorted(collected) == [("deployments", "web"), ("secrets", "web-keys"), ("services", "web")]
        created = len(writes_to(cluster, *OWNED_PLURALS))
        # The operator goes on reconciling (the model sees its user gone, then resyncs twice more)...
        await eventually(lambda: status(cluster, MODELS, "resnet").get("usedBy") == [], what="model resynced")
        lists = webservice_lists(cluster)
        await eventually(lambda: webservice_lists(cluster) >= lists + 2, what="two more model resyncs")
        # ...and nothing it owned came back.
        assert len(writes_to(cluster, *OWNED_PLURALS)) == created
        for (resource, _, _), obj in cluster.objects.items():
            if not obj.deleted:
                refs = obj.raw.get("metadata", {}).get("ownerReferences") or []
                assert all(ref["uid"] != uid for ref in refs), resource


async def test_invalid_spec_and_missing_model_are_conditions_not_crashes(
    cluster: Cluster, kube: Kube, start_operator: StartOperator
) -> None:
    async with start_operator():
        await create(cluster, webservice_body(name="broken", replicas=-1))
        await create(cluster, webservice_body(name="early", model="later"))
        await eventually(lambda: status(cluster, WS, "broken").get("phase") == "Failed", what="broken fails")
        assert condition(cluster, WS, "broken", "Deployed")["reason"] == "InvalidSpec"
        assert "spec.replicas" in condition(cluster, WS, "broken", "Deployed")["message"]
        await eventually(
            lambda: condition(cluster, WS, "early", "ModelReady").get("reason") == "ModelNotFound"
        )
        assert status(cluster, WS, "early")["phase"] == "Pending"
        # The operator keeps working: the model arrives, the waiting web service deploys (retried).
        await create(cluster, model_body(name="later"))
        await eventually(
            lambda: cluster.live("apps/v1/deployments", NAMESPACE, "early"), what="early deployed"
        )
        # Fixing the broken spec deploys it too.
        await create(cluster, model_body())
        await kube.patch(FPGAWEBSERVICE, NAMESPACE, "broken", {"spec": {"replicas": 1}})
        await eventually(
            lambda: cluster.live("apps/v1/deployments", NAMESPACE, "broken"), what="fixed deployed"
        )
        await eventually(
            lambda: (
                ("Warning", "InvalidSpec")
                in {(kind, reason) for kind, reason, _ in events_for(cluster, "broken")}
            ),
            what="a Warning Event",
        )


async def test_restart_changes_nothing(
    cluster: Cluster, kube: Kube, start_operator: StartOperator, config: OperatorConfig
) -> None:
    async with start_operator():
        await deployed(cluster)
        await mark_available(kube)
        await eventually(lambda: status(cluster, WS, "web").get("phase") == "Ready", what="web ready")
    before_writes = writes_to(cluster)
    before = {
        name: cluster.live(resource, NAMESPACE, name) for resource, name in ((WS, "web"), (MODELS, "resnet"))
    }
    events_before = len(events_for(cluster, "web"))
    gets_before = sum(
        1 for r in cluster if r.method.value == "GET" and r.url.path.endswith("/deployments/web")
    )
    async with start_operator():
        # Resumed and resynced at least twice: the Deployment was read again and again.
        await eventually(
            lambda: (
                sum(1 for r in cluster if r.method.value == "GET" and r.url.path.endswith("/deployments/web"))
                >= gets_before + 3
            ),
            what="resume and resyncs",
        )
    assert writes_to(cluster) == before_writes  # not one write: no object, no status, no Event
    assert len(events_for(cluster, "web")) == events_before
    for name, body in before.items():
        after = cluster.live(WS if name == "web" else MODELS, NAMESPACE, name)
        assert after is not None and body is not None
        assert (after["spec"], after["status"]) == (body["spec"], body["status"])
