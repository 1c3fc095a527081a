"""The operator's installation manifest: valid objects, and RBAC for exactly what it uses."""

from __future__ import annotations

from typing import Any

import pytest

from fpgaserve.api import kinds
from fpgaserve.api.crd_models import MODEL_PLURAL, WEBSERVICE_PLURAL
from fpgaserve.operator.handlers import OWNED_WATCHES
from fpgaserve.operator.install_objects import RULES, build_manifest
from tests.operator.helpers import assert_valid


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def verbs(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {v for r in rules if group in r["apiGroups"] and resource in r["resources"] for v in r["verbs"]}


@pytest.mark.parametrize("watch", [None, ["team-a", "team-b"]], ids=["cluster-wide", "namespaced"])
@pytest.mark.parametrize("peering", [False, True], ids=["standalone", "peering"])
def test_objects_are_valid(watch: list[str] | None, peering: bool) -> None:
    objects = build_manifest(watch_namespaces=watch, peering=peering, replicas=2 if peering else 1)
    for obj in objects:
        if obj["apiVersion"] != "kopf.dev/v1":  # kopf's own peering objects have no public schema
            assert_valid(obj)
    (deployment,) = by_kind(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert container["command"] == ["python", "-m", "fpgaserve.operator"]
    assert any(a.startswith("--liveness=") for a in args)
    if watch is None:
        assert "--all-namespaces" in args and len(by_kind(objects, "ClusterRoleBinding")) == 1
    else:
        assert [a for a in args if a.startswith("--namespace=")] == [
            "--namespace=team-a",
            "--namespace=team-b",
        ]
        assert [b["metadata"]["namespace"] for b in by_kind(objects, "RoleBinding")] == watch
        assert by_kind(objects, "ClusterRoleBinding") == []
    assert ("--peering=fpgaserve-operator" in args) is peering
    assert bool(by_kind(objects, "CustomResourceDefinition")) is peering


def test_rules_cover_exactly_what_the_operator_uses() -> None:
    # Deleted only when a spec turns them off (reconcile_webservice._prune); the Deployment and the
    # Service go with their web service (garbage collector). tests/operator/test_rbac.py checks
    # these against the calls the operator really makes.
    watched = {(group, plural) for group, _, plural in OWNED_WATCHES}
    for kind in (kinds.DEPLOYMENT, kinds.SERVICE, kinds.SECRET, kinds.INGRESS, kinds.HPA, kinds.PDB):
        group = kind.api_version.rpartition("/")[0]
        owned = {"get", "create", "patch"}
        if kind not in (kinds.DEPLOYMENT, kinds.SERVICE):
            owned.add("delete")
        if (group, kind.plural) in watched:
            owned |= {"list", "watch"}  # kopf lists and watches what OWNED_WATCHES names
        assert verbs(RULES, group, kind.plural) == owned, kind.kind
    assert ("", "secrets") not in watched  # listing Secrets would read every one in the namespace
    # Pods: read only, listed by the reconciler (diagnosis) and watched by kopf.
    assert verbs(RULES, "", "pods") == {"list", "watch"} and ("", "pods") in watched
    for plural in (MODEL_PLURAL, WEBSERVICE_PLURAL):
        assert verbs(RULES, "fpgaserve.io", plural) == {"get", "list", "watch", "patch"}
        assert verbs(RULES, "fpgaserve.io", f"{plural}/status") == {"patch"}
    assert verbs(RULES, "", "events") == {"create"}
    for rule in RULES:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
    # Nothing cluster-scoped: no namespaces, no CRDs, no nodes.
    everything = {res for rule in RULES for res in rule["resources"]}
    assert not everything & {"namespaces", "customresourcedefinitions", "nodes", "replicasets"}


def test_more_replicas_need_peering() -> None:
    with pytest.raises(ValueError, match="peering"):
        build_manifest(replicas=2)
