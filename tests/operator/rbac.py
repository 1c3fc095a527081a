"""What RBAC a recorded API request needs, and whether a role grants it.

Role: the operator's kmock tests record every request the operator sends (``conftest.py``:
``ApiCall``s in a session-wide ``RbacLog``); ``test_rbac.py`` checks them against the ClusterRole of
``fpgaserve operator manifest`` and of the chart: every call allowed, every granted verb used.
The mapping from HTTP to RBAC verbs is the API server's (get/list/watch/create/update/patch/delete/
deletecollection); discovery (``/api``, ``/apis``, no resource) is open to every authenticated
user (system:discovery) and needs no rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kmock

__all__ = ["ApiCall", "Grant", "RbacLog", "allowed", "api_call", "grants"]


@dataclass(frozen=True, order=True)
class ApiCall:
    """One request as RBAC sees it: verb on group/resource[/subresource], in a namespace or not."""

    verb: str
    group: str
    resource: str  # "plural" or "plural/subresource"
    namespace: str | None


@dataclass(frozen=True, order=True)
class Grant:
    """One verb on one resource, as a rule grants it."""

    group: str
    resource: str
    verb: str


@dataclass
class RbacLog:
    """Every API call of the operators of this session, and which tests made them.

    ``scopes``: per call, the installs it was made under (watched namespaces, None for cluster-wide;
    peering on or off), so it is checked against the right role and bindings."""

    calls: dict[tuple[ApiCall, tuple[str, ...] | None, bool], set[str]] = field(default_factory=dict)
    tests_recorded: set[str] = field(default_factory=set)
    tests_expected: set[str] = field(default_factory=set)
    tests_missing: set[str] = field(default_factory=set)  # deselected or failed: the log is partial

    def add(self, call: ApiCall, *, namespaces: Sequence[str] | None, peering: bool, test: str) -> None:
        key = (call, None if namespaces is None else tuple(namespaces), peering)
        self.calls.setdefault(key, set()).add(test)


def api_call(request: kmock.Request) -> ApiCall | None:
    """The RBAC view of a request; None for discovery and other non-resource URLs."""
    if request.resource is None or not request.resource.plural:
        return None
    method = request.method.value
    if method == "GET":
        if request.name is not None:
            verb = "get"
        else:
            verb = "watch" if request.params.get("watch") in ("true", "1") else "list"
    elif method == "DELETE":
        verb = "delete" if request.name is not None else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]
    resource = str(request.resource.plural)
    if request.subresource:
        resource += f"/{request.subresource}"
    return ApiCall(
        verb=verb, group=str(request.resource.group or ""), resource=resource, namespace=request.namespace
    )


def grants(rules: Iterable[Mapping[str, Any]]) -> set[Grant]:
    """Every (group, resource, verb) the rules grant (they name all three; no wildcards)."""
    out = set()
    for rule in rules:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"a wildcard in {rule}"
                    out.add(Grant(group=group, resource=resource, verb=verb))
    return out


def allowed(call: ApiCall, *, granted: set[Grant], bound_namespaces: Sequence[str] | None) -> bool:
    """Whether a role with ``granted``, bound cluster-wide (None) or in ``bound_namespaces`` by
    RoleBindings, allows ``call`` (a RoleBinding never allows cluster-scoped or all-namespace calls)."""
    if Grant(group=call.group, resource=call.resource, verb=call.verb) not in granted:
        return False
    return bound_namespaces is None or call.namespace in bound_namespaces
