"""RBAC that is checked, not hoped: the operator's recorded API calls against its roles.

Every kmock test that runs the real operator records each API call it sends (``conftest.py``).
Here, after all of them (this test is moved to the end of the session), the ClusterRole of
``fpgaserve operator manifest`` and of the Helm chart must allow every recorded call under the
install it was made in (cluster-wide or RoleBindings in the watched namespaces; peering or not),
and every verb they grant must have been used by some test, except the deliberate extras below.
A new watch or write in the operator (a new handler, another helper's reconciler) shows up in the
log by itself: it fails here until the rules grant it, and a rule nobody uses fails too.
"""

from __future__ import annotations

import functools
from typing import Any

import helm_python as helm
import pytest

from fpgaserve.operator.install_objects import build_manifest
from tests.charts.test_chart import parse
from tests.operator.conftest import rbac_log
from tests.operator.helpers import ROOT
from tests.operator.rbac import ApiCall, Grant, RbacLog, allowed, grants

_KOPF_GET = (
    "kopf's documented RBAC for the resources it serves; it lists and watches them, and a GET of "
    "one object is one failure away (a kopf upgrade) from being needed"
)
_DRA_UNRECORDED = (
    "DRA mode (issue 15): the reconciler's tests drive it without the kopf operator, so no recorded "
    "test makes this call yet; an operator test in DRA mode would retire these entries"
)
# Granted although no recorded test makes the call, each for a reason. Shrink this list by
# covering the call in an operator test (the check then passes without the entry).
DELIBERATE_EXTRAS: dict[Grant, str] = {
    Grant("resource.k8s.io", "resourceclaimtemplates", "create"): _DRA_UNRECORDED,
    Grant("resource.k8s.io", "resourceclaimtemplates", "patch"): _DRA_UNRECORDED,
    Grant("resource.k8s.io", "resourceclaimtemplates", "delete"): _DRA_UNRECORDED,
    Grant("kopf.dev", "kopfpeerings", "get"): _KOPF_GET,
    Grant("kopf.dev", "clusterkopfpeerings", "get"): _KOPF_GET,
}


def cluster_role(objects: list[dict[str, Any]]) -> set[Grant]:
    (role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    return grants(role["rules"])


def manifest_role(*, namespaces: tuple[str, ...] | None, peering: bool) -> set[Grant]:
    watch = None if namespaces is None else list(namespaces)
    return cluster_role(build_manifest(watch_namespaces=watch, peering=peering, replicas=2 if peering else 1))


@functools.cache
def chart_role(*, namespaces: tuple[str, ...] | None, peering: bool) -> set[Grant]:
    values: dict[str, Any] = {"watchNamespaces": list(namespaces or ())}
    if peering:
        values |= {"peering": {"enabled": True}, "replicaCount": 2}
    with helm.Chart.load(ROOT / "charts" / "fpgaserve") as chart:
        return cluster_role(parse(chart.render(values, name="fpgaserve", namespace="fpgaserve-system")))


def _operator_test_files() -> set[str]:
    """Every test module that starts the operator, whether or not this session collected it."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "tests").rglob("test_*.py")
        if "start_operator" in path.read_text()
    }


def complete_log(request: pytest.FixtureRequest) -> RbacLog:
    log = rbac_log(request.config)
    collected = {nodeid.split("::", 1)[0] for nodeid in log.tests_expected}
    uncollected = _operator_test_files() - collected - {f"tests/operator/{__name__.rsplit('.', 1)[-1]}.py"}
    if uncollected:
        pytest.skip(f"{len(uncollected)} operator test module(s) not collected: {sorted(uncollected)[:3]}")
    if log.tests_missing:
        pytest.skip(f"{len(log.tests_missing)} operator test(s) deselected: the API call log is partial")
    if request.session.testsfailed:
        pytest.skip("other tests failed: the API call log may be partial")
    unrecorded = log.tests_expected - log.tests_recorded
    if unrecorded:
        pytest.skip(f"{len(unrecorded)} operator test(s) did not run: {sorted(unrecorded)[:3]}")
    if not log.calls:
        pytest.skip("no operator test ran in this session")
    return log


def test_every_granted_verb_is_used(request: pytest.FixtureRequest) -> None:
    log = complete_log(request)
    for role in ("manifest", "chart"):
        make = manifest_role if role == "manifest" else chart_role
        granted_all: set[Grant] = set()
        denied: list[str] = []
        for (call, namespaces, peering), tests in sorted(log.calls.items(), key=str):
            granted = make(namespaces=namespaces, peering=peering)
            granted_all |= granted
            if not allowed(call, granted=granted, bound_namespaces=namespaces):
                denied.append(f"{call} (in {sorted(tests)[0]})")
        assert denied == [], f"the {role}'s ClusterRole does not allow:\n" + "\n".join(denied)
        # Every install shape the tests ran: what its role grants must have been used in some test.
        used = {Grant(group=c.group, resource=c.resource, verb=c.verb) for c, _, _ in log.calls}
        unused = sorted(granted_all - used - set(DELIBERATE_EXTRAS))
        assert unused == [], f"the {role}'s ClusterRole grants what no test uses: {unused}"
        # An extra that a test now uses, or that no role grants any more, must leave the list.
        stale = sorted((set(DELIBERATE_EXTRAS) & used) | (set(DELIBERATE_EXTRAS) - granted_all))
        assert stale == [], f"remove from DELIBERATE_EXTRAS: {stale}"


def test_a_request_outside_the_rules_is_refused() -> None:
    granted = manifest_role(namespaces=None, peering=False)
    create_pod = ApiCall(verb="create", group="", resource="pods", namespace="ns1")
    assert not allowed(create_pod, granted=granted, bound_namespaces=None)
    get_secret = ApiCall(verb="get", group="", resource="secrets", namespace="ns1")
    assert allowed(get_secret, granted=granted, bound_namespaces=None)
    # A RoleBinding grants in its namespace only, and never cluster-scoped calls.
    assert not allowed(get_secret, granted=granted, bound_namespaces=("ns2",))
    list_all = ApiCall(verb="list", group="fpgaserve.io", resource="fpgamodels", namespace=None)
    assert allowed(list_all, granted=granted, bound_namespaces=None)
    assert not allowed(list_all, granted=granted, bound_namespaces=("ns1",))
