"""The real operator (kmock) with the objects a spec can turn on, change and turn off again:
Ingress, HorizontalPodAutoscaler, PodDisruptionBudget. Their create, patch and delete calls are
the operator's; ``test_rbac.py`` checks them against the ClusterRole."""

from __future__ import annotations

from typing import Any

from fpgaserve.api.kinds import FPGAWEBSERVICE, PDB
from fpgaserve.operator.kube import Kube
from tests.operator.cluster import Cluster
from tests.operator.conftest import StartOperator
from tests.operator.helpers import NAMESPACE, create, model_body, webservice_body
from tests.support.polling import eventually

INGRESS = "networking.k8s.io/v1/ingresses"
HPA = "autoscaling/v2/horizontalpodautoscalers"
PDBS = "policy/v1/poddisruptionbudgets"


def live(cluster: Cluster, resource: str) -> dict[str, Any] | None:
    return cluster.live(resource, NAMESPACE, "web")


async def test_optional_objects_follow_the_spec(
    cluster: Cluster, kube: Kube, start_operator: StartOperator
) -> None:
    async with start_operator():
        await create(cluster, model_body())
        spec = {"autoscale": {"minReplicas": 2, "maxReplicas": 4}, "ingress": {"host": "web.example.com"}}
        await create(cluster, webservice_body(**spec))
        await eventually(
            lambda: all(live(cluster, r) is not None for r in (INGRESS, HPA, PDBS)),
            what="ingress, HPA and PDB",
        )

        # Changed in the spec: patched.
        await kube.patch(FPGAWEBSERVICE, NAMESPACE, "web", {"spec": {
            "autoscale": {"maxReplicas": 6}, "ingress": {"host": "scoring.example.com"}}})  # fmt: skip
        await eventually(
            lambda: (
                (live(cluster, HPA) or {}).get("spec", {}).get("maxReplicas") == 6
                and (live(cluster, INGRESS) or {}).get("spec", {}).get("rules", [{}])[0].get("host")
                == "scoring.example.com"
            ),
            what="HPA and ingress updated",
        )
        # Edited by hand: the resync restores it.
        await kube.patch(PDB, NAMESPACE, "web", {"spec": {"maxUnavailable": 3}})
        await eventually(
            lambda: (live(cluster, PDBS) or {}).get("spec", {}).get("maxUnavailable") == 1,
            what="PDB restored",
        )

        # Turned off: deleted.
        await kube.patch(FPGAWEBSERVICE, NAMESPACE, "web", {"spec": {"autoscale": None, "ingress": None}})
        await eventually(
            lambda: all(live(cluster, r) is None for r in (INGRESS, HPA, PDBS)),
            what="ingress, HPA and PDB removed",
        )
