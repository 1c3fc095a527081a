"""Peering: two replicas of the real operator on one API server, one active and one on standby.

Both run as ``fpgaserve operator --peering NAME --priority N`` runs them (``runner.run``), with
``--namespace ns1`` or ``--all-namespaces``, against kopf's peering CRDs (``build_peering_crds``)
and the peering object the manifest installs for that scope. Each replica has API clients of its
own, so the request log says who sent what (``sent_by``, ``writes_to(..., by=...)``).
"""

from __future__ import annotations

import contextlib
import datetime
from typing import Any

import kmock
import pytest

from fpgaserve.operator.install_objects import DEFAULT_NAME, build_manifest, build_peering_crds
from tests.operator.cluster import Cluster
from tests.operator.conftest import StartOperator
from tests.operator.helpers import NAMESPACE, create, model_body, sent_by, webservice_body, writes_to
from tests.support.polling import DEADLINE, eventually

ACTIVE, STANDBY = "active", "standby"  # the replicas' bearer tokens (see start_operator)
# Short, so that a lapsed record is taken over from within the test; long enough that a busy
# 2-core machine never lets a running replica's record lapse (kopf renews it every second at
# lifetimes up to 6 s).
LIFETIME = 5
VERBS = {
    kmock.action.LIST: "list",
    kmock.action.WATCH: "watch",
    kmock.action.FETCH: "get",
    kmock.action.CREATE: "create",
    kmock.action.UPDATE: "patch",
    kmock.action.DELETE: "delete",
}


class Peering:
    """One scope's peering: the object the manifest installs and how the replicas are started."""

    def __init__(self, *, clusterwide: bool) -> None:
        self.manifest = build_manifest(
            watch_namespaces=None if clusterwide else [NAMESPACE], peering=True, replicas=2
        )
        self.namespace = None if clusterwide else NAMESPACE
        self.plural = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
        where = "" if clusterwide else f"namespaces/{NAMESPACE}/"
        self.url = f"/apis/kopf.dev/v1/{where}{self.plural}"
        scope: dict[str, Any] = {"clusterwide": True, "namespaces": []} if clusterwide else {}
        self.options = {"peering_name": DEFAULT_NAME, "peering_lifetime": LIFETIME, **scope}

    async def install(self, cluster: Cluster) -> None:
        """kopf's peering CRDs, then the manifest's peering object (the only one kopf uses)."""
        for crd in build_peering_crds():
            response = await cluster.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
            assert response.status == 200, await response.text()
        (peering,) = [obj for obj in self.manifest if obj["apiVersion"] == "kopf.dev/v1"]
        where = {"namespace": self.namespace} if self.namespace else {}
        assert peering["metadata"] == {"name": DEFAULT_NAME, **where}
        response = await cluster.post(self.url, json=peering)
        assert response.status == 200, await response.text()

    def records(self, cluster: Cluster) -> dict[str, dict[str, Any]]:
        """kopf's keep-alive records in the peering object, by replica identity."""
        peering = cluster.live(f"kopf.dev/v1/{self.plural}", self.namespace, DEFAULT_NAME) or {}
        return dict(peering.get("status") or {})

    def priorities(self, cluster: Cluster) -> list[int]:
        return sorted(record["priority"] for record in self.records(cluster).values())

    def granted(self, plural: str) -> set[str]:
        """The verbs the manifest's ClusterRole grants on a kopf.dev resource."""
        (role,) = [obj for obj in self.manifest if obj["kind"] == "ClusterRole"]
        rules = role["rules"]
        return {
            v for r in rules if "kopf.dev" in r["apiGroups"] and plural in r["resources"] for v in r["verbs"]
        }


def touched(cluster: Cluster, by: str) -> set[str]:
    """The resources (plurals) a replica sent any request about, discovery aside."""
    return {str(r.resource.plural) for r in cluster if sent_by(r) == by and r.resource and r.resource.plural}


def deployment_reads(cluster: Cluster, by: str, name: str) -> int:
    """How often a replica read the Deployment ``name``: once per reconciliation of its web service."""
    path = f"/deployments/{name}"
    return sum(1 for r in cluster if r.method == "GET" and r.url.path.endswith(path) and sent_by(r) == by)


@pytest.mark.parametrize("clusterwide", [False, True], ids=["namespaced", "cluster-wide"])
async def test_one_replica_acts_and_the_standby_takes_over_after_a_clean_stop(
    cluster: Cluster, start_operator: StartOperator, clusterwide: bool
) -> None:
    peering = Peering(clusterwide=clusterwide)
    await peering.install(cluster)
    async with contextlib.AsyncExitStack() as standby:
        async with start_operator(token=ACTIVE, priority=100, **peering.options):
            # The standby starts once the active replica is on record, as a second pod would: its
            # first look at the peering object shows a higher priority, so it never starts acting.
            await eventually(lambda: peering.priorities(cluster) == [100], what="the active replica's record")
            await standby.enter_async_context(start_operator(token=STANDBY, priority=10, **peering.options))
            await eventually(lambda: peering.priorities(cluster) == [10, 100], what="the standby's record")

            await create(cluster, model_body())
            await create(cluster, webservice_body())
            await eventually(
                lambda: cluster.live("apps/v1/deployments", NAMESPACE, "web"), what="web deployed"
            )
            assert "POST /apis/apps/v1/namespaces/ns1/deployments" in writes_to(cluster, by=ACTIVE)
            # Staying idle is nothing to wait for, so the standby gets an observation window: until
            # the active replica has reconciled the web service twice more (resyncs every 0.5 s),
            # bounded by the deadline. Counted in the active replica's cycles rather than seconds,
            # it gives the standby (same resync period) as many chances to act on any machine.
            reads = deployment_reads(cluster, ACTIVE, "web")
            await eventually(lambda: deployment_reads(cluster, ACTIVE, "web") >= reads + 2, what="2 resyncs")
            assert set(writes_to(cluster, by=STANDBY)) == {f"PATCH {peering.url}/{DEFAULT_NAME}"}
            # Paused by kopf, it did not even list or watch our objects: only its keep-alives.
            assert touched(cluster, STANDBY) == {peering.plural}

        # The active replica stopped cleanly and took its record along: no lifetime to wait out.
        assert peering.priorities(cluster) == [10]
        await create(cluster, webservice_body(name="web2"))
        await eventually(lambda: cluster.live("apps/v1/deployments", NAMESPACE, "web2"), what="web2 deployed")
        assert "POST /apis/apps/v1/namespaces/ns1/deployments" in writes_to(cluster, by=STANDBY)
        # The first web service, resumed by the standby, needed nothing and was not written again.
        taken_over = writes_to(cluster, by=STANDBY)
        assert not [w for w in taken_over if w.endswith(("/web", "/web/status", "/web-keys"))], taken_over

    # kopf used the peering resource of the operator's scope, with what the manifest's RBAC grants.
    used = {
        (str(r.resource.plural), VERBS[r.action])
        for r in cluster
        if sent_by(r) and r.resource and r.resource.group == "kopf.dev" and r.resource.plural and r.action
    }
    assert {plural for plural, _ in used} == {peering.plural}
    assert {verb for _, verb in used} <= peering.granted(peering.plural), used


async def test_a_replica_gone_without_a_clean_stop_is_taken_over_from_when_its_record_lapses(
    cluster: Cluster, start_operator: StartOperator
) -> None:
    peering = Peering(clusterwide=False)
    await peering.install(cluster)
    async with start_operator(token=ACTIVE, priority=100, **peering.options):
        await eventually(lambda: peering.priorities(cluster) == [100], what="the active replica's record")
        ((identity, record),) = peering.records(cluster).items()
    # What a killed pod leaves behind: its last keep-alive (kopf's own record, put back as if just
    # renewed), which nobody renews any more.
    renewed = datetime.datetime.now(datetime.UTC)
    record["lastseen"] = renewed.isoformat()
    response = await cluster.patch(f"{peering.url}/{DEFAULT_NAME}", json={"status": {identity: record}})
    assert response.status == 200, await response.text()

    async with start_operator(token=STANDBY, priority=10, **peering.options):
        await create(cluster, model_body())
        await create(cluster, webservice_body())
        await eventually(
            lambda: cluster.live("apps/v1/deployments", NAMESPACE, "web"),
            timeout=LIFETIME + DEADLINE,
            what="web deployed",
        )
        # It held back for the record's lifetime (the runner's peering_lifetime; kopf compares
        # wall-clock times, as here), then acted...
        assert record["lifetime"] == LIFETIME
        assert datetime.datetime.now(datetime.UTC) >= renewed + datetime.timedelta(seconds=LIFETIME)
        assert "POST /apis/apps/v1/namespaces/ns1/deployments" in writes_to(cluster, by=STANDBY)
        # ...and removed the lapsed record.
        assert peering.priorities(cluster) == [10]


async def test_replicas_from_one_template_do_not_tie(cluster: Cluster, start_operator: StartOperator) -> None:
    # The manifest and the chart start every replica with --peering and no --priority. kopf freezes
    # all replicas that share the highest priority, so each must draw its own (runner.run).
    peering = Peering(clusterwide=False)
    await peering.install(cluster)
    async with (
        start_operator(token=ACTIVE, **peering.options),
        start_operator(token=STANDBY, **peering.options),
    ):
        await eventually(lambda: len(set(peering.priorities(cluster))) == 2, what="both records")
        await create(cluster, model_body())
        await create(cluster, webservice_body())
        await eventually(lambda: cluster.live("apps/v1/deployments", NAMESPACE, "web"), what="web deployed")
        deployers = {
            by
            for by in (ACTIVE, STANDBY)
            if "POST /apis/apps/v1/namespaces/ns1/deployments" in writes_to(cluster, by=by)
        }
        assert len(deployers) == 1
