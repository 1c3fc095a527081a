"""Status of FpgaModels and FpgaWebservices: conditions, phase, and the patch that updates them.

Role: pure functions for ``fpgaserve.operator.reconcile_webservice``. A reconciler collects ``Check`` results
(is the model ready, is everything deployed), these turn them into the status the CRD declares,
keeping a condition's lastTransitionTime while its status holds, and ``status_patch`` yields only
the fields that changed, so that a resync that finds nothing new writes nothing.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fpgaserve.api.conditions import WORKLOAD_FAILURES
from fpgaserve.api.crd_models import FpgaWebserviceSpec

__all__ = [
    "Check",
    "deployment_availability",
    "model_status",
    "now_iso",
    "set_conditions",
    "status_patch",
    "webservice_status",
]


@dataclass(frozen=True)
class Check:
    """One condition's verdict: True, False, or None for Unknown; permanent failures need a
    changed spec, the others are retried."""

    ok: bool | None
    reason: str
    message: str = ""
    permanent: bool = False


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_word(ok: bool | None) -> str:
    return "Unknown" if ok is None else str(ok)


def set_conditions(
    previous: Sequence[Mapping[str, Any]], checks: Mapping[str, Check], *, now: str, generation: int | None
) -> list[dict[str, Any]]:
    """Conditions in ``checks`` order; lastTransitionTime moves only when a status changes."""
    before = {c.get("type"): c for c in previous}
    out = []
    for kind, check in checks.items():
        status = _status_word(check.ok)
        old = before.get(kind)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        condition: dict[str, Any] = {
            "type": kind,
            "status": status,
            "reason": check.reason,
            "message": check.message,
            "lastTransitionTime": since or now,
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        out.append(condition)
    return out


def _overall(checks: Mapping[str, Check]) -> Check:
    """The Ready verdict: the first failure, else the first unknown, else ready."""
    for wanted in (False, None):
        for check in checks.values():
            if check.ok is wanted:
                return check
    return Check(True, "Ready")


def deployment_availability(deployment: Mapping[str, Any] | None) -> tuple[Check, int | None, int | None]:
    """From a live Deployment: whether it is available, its replicas and its ready replicas."""
    if deployment is None:
        return Check(None, "NotDeployed", "no Deployment yet"), None, None
    status = deployment.get("status") or {}
    wanted = (deployment.get("spec") or {}).get("replicas")
    ready = int(status.get("readyReplicas") or 0)
    available = next((c for c in status.get("conditions") or [] if c.get("type") == "Available"), None)
    if available is None:
        check = Check(None, "Waiting", "the Deployment reports no availability yet")
    elif available.get("status") == "True":
        check = Check(True, "MinimumReplicasAvailable", f"{ready} ready")
    else:
        check = Check(
            False, str(available.get("reason") or "Unavailable"), str(available.get("message") or "")
        )
    return check, (int(wanted) if wanted is not None else status.get("replicas")), ready


def webservice_status(
    *,
    previous: Mapping[str, Any],
    generation: int | None,
    now: str,
    model_ready: Check,
    deployed: Check,
    deployment: Mapping[str, Any] | None,
    spec: FpgaWebserviceSpec | None,
    url: str | None = None,
    internal_url: str | None = None,
    keys_secret: str | None = None,
    model_digest: str | None = None,
    failure: Check | None = None,
) -> dict[str, Any]:
    """The whole status of a web service (absent fields as None, for ``status_patch``).
    ``failure`` is why its pods do not come up (``fpgaserve.operator.diagnosis``): it becomes the
    Ready verdict and the phase Failed, until it goes away."""
    available, replicas, ready = deployment_availability(deployment if deployed.ok else None)
    checks = {"ModelReady": model_ready, "Deployed": deployed, "Available": available}
    overall = _overall(checks)
    if failure is not None and deployed.ok and model_ready.ok:
        overall = failure
    if overall.ok:
        phase = "Ready"
    elif overall.permanent or overall.reason in WORKLOAD_FAILURES:
        phase = "Failed"
    elif model_ready.ok and deployed.ok:
        phase = "Deploying"
    else:
        phase = "Pending"
    conditions = set_conditions(
        previous.get("conditions") or [], {**checks, "Ready": overall}, now=now, generation=generation
    )
    return {
        "phase": phase,
        "conditions": conditions,
        "observedGeneration": generation,
        "replicas": replicas,
        "readyReplicas": ready,
        "url": url if spec is not None else None,
        "internalUrl": internal_url,
        "keysSecret": keys_secret,
        "modelDigest": model_digest,
    }


def model_status(
    *,
    previous: Mapping[str, Any],
    generation: int | None,
    now: str,
    source: Check,
    digest: str | None,
    used_by: Sequence[str],
    manifest: Check | None = None,
    package: Mapping[str, Any] | None = None,
    deleting: Check | None = None,
) -> dict[str, Any]:
    """The whole status of a model. ``manifest`` is the verdict on reading the package's manifest
    (None: not attempted), ``package`` its findings (pipeline, deviceMemoryBytes, sizeBytes), and
    ``deleting`` the verdict on a pending deletion."""
    checks = {"SourceValid": source}
    if manifest is not None:
        checks["ManifestRead"] = manifest
    if deleting is not None:
        checks["Deleting"] = deleting
    # An unreadable manifest does not hold a model back (storage-init may reach what the operator
    # cannot); an invalid one does.
    failed = next((c for c in (source, manifest) if c is not None and c.ok is False), None)
    ready = Check(True, "Ready") if failed is None else failed
    if deleting is not None:
        phase = "Terminating"
    elif failed is None:
        phase = "Ready"
    else:
        phase = "Failed" if failed.permanent else "Pending"
    conditions = set_conditions(
        previous.get("conditions") or [], {**checks, "Ready": ready}, now=now, generation=generation
    )
    package = package or {}
    return {
        "phase": phase,
        "conditions": conditions,
        "observedGeneration": generation,
        "digest": digest,
        "usedBy": sorted(used_by),
        "pipeline": package.get("pipeline"),
        "deviceMemoryBytes": package.get("deviceMemoryBytes"),
        "sizeBytes": package.get("sizeBytes"),
    }


def status_patch(previous: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch from ``previous`` to ``new`` (None removes a field); empty when equal.

    Conditions compare without their timestamps' influence: a transition time is kept while the
    status holds (``set_conditions``), so unchanged conditions are equal as a whole.
    """
    patch: dict[str, Any] = {}
    for key in sorted(set(previous) | set(new)):
        old, value = previous.get(key), new.get(key)
        if value != old and not (value is None and key not in previous):
            patch[key] = value
    return patch
