"""What one reconcile cycle reports, shared by the FpgaWebservice and FpgaModel reconcilers.

Role: the ``Outcome`` of a cycle (status patch, Events, the failure to retry) and the helpers both
reconcilers use to build it; ``fpgaserve.operator.handlers`` turns an ``Outcome`` into kopf's
status patch, Events and retry errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fpgaserve.api.kinds import ApiError
from fpgaserve.operator.kube import NotOwnedError
from fpgaserve.operator.status import Check

__all__ = ["Event", "Outcome", "api_check", "identity", "transition_events"]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the reconciled object."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Outcome:
    """What a reconcile cycle found: the status patch, Events, and the failure to retry, if any."""

    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    error: Check | None = None


def identity(body: Mapping[str, Any]) -> tuple[str, str, str, int | None]:
    """Name, namespace, uid and generation of an object."""
    meta = body["metadata"]
    return meta["name"], meta["namespace"], meta["uid"], meta.get("generation")


def api_check(exc: ApiError | NotOwnedError) -> Check:
    if isinstance(exc, NotOwnedError):
        return Check(False, "NotOwned", str(exc))
    # 400/422: the API refuses what the spec asks for, and only a changed spec can fix that.
    return Check(False, "ApiError", str(exc), permanent=exc.status in (400, 422))


def transition_events(
    previous: Mapping[str, Any], new: Mapping[str, Any], error: Check | None
) -> list[Event]:
    """One Event per change of phase or of the Ready condition's reason (not per retry): a Warning
    for a failure, Normal otherwise (so a recovery is an Event too)."""

    def ready(status: Mapping[str, Any]) -> Mapping[str, Any]:
        return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})

    def ready_reason(status: Mapping[str, Any]) -> str | None:
        return ready(status).get("reason")

    if (previous.get("phase"), ready_reason(previous)) == (new.get("phase"), ready_reason(new)):
        return []
    if error is not None:
        return [Event("Warning", error.reason, error.message)]
    if new.get("phase") == "Failed":  # seen, not an error of the cycle: why the pods do not come up
        condition = ready(new)
        return [Event("Warning", str(condition.get("reason")), str(condition.get("message") or ""))]
    return [Event("Normal", str(new.get("phase")), f"phase {new.get('phase')}: {ready_reason(new)}")]
