"""Why a web service's pods are not coming up, read from its Deployment and its pods.

Role: pure functions for ``fpgaserve.operator.reconcile_webservice``. ``needs_pods`` says whether a
Deployment is short of ready replicas (only then are the pods listed); ``diagnose`` turns the
Deployment's Progressing condition and the pods' scheduling and container states into one failed
``Check`` with a reason of ``fpgaserve.api.conditions.WORKLOAD_FAILURES`` and a message a user can
act on, or None while everything is merely on its way. Messages come from the kubelet and the
scheduler (and from the containers' termination messages, which storage-init keeps secret-free).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fpgaserve.api.conditions import (
    CRASH_LOOP,
    IMAGE_PULL_FAILED,
    PROGRESS_DEADLINE_EXCEEDED,
    STORAGE_INIT_FAILED,
    UNSCHEDULABLE,
)
from fpgaserve.operator.status import Check

__all__ = ["INIT_CONTAINER", "SERVER_CONTAINER", "diagnose", "needs_pods", "pods_of"]

INIT_CONTAINER = "storage-init"
SERVER_CONTAINER = "server"
_IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName"}
_MESSAGE_CHARS = 600  # enough for a scheduler's or kubelet's message; a condition is no log


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in (obj.get("status") or {}).get("conditions") or []}


def needs_pods(deployment: Mapping[str, Any] | None) -> bool:
    """Whether the Deployment is short of ready pods (so that its pods may say why)."""
    if deployment is None:
        return False
    status = deployment.get("status") or {}
    wanted = (deployment.get("spec") or {}).get("replicas")
    wanted = 1 if wanted is None else int(wanted)
    available = _conditions(deployment).get("Available", {}).get("status") == "True"
    return not available or int(status.get("readyReplicas") or 0) < wanted


def pods_of(pods: Sequence[Mapping[str, Any]], selector: Mapping[str, str]) -> list[Mapping[str, Any]]:
    """The pods matching ``selector`` that are not being deleted, newest first (a rollout's)."""
    chosen = [
        pod
        for pod in pods
        if all(((pod.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in selector.items())
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    ]
    return sorted(chosen, key=lambda p: str(p["metadata"].get("creationTimestamp") or ""), reverse=True)


def _clip(text: str) -> str:
    text = " ".join(text.split())  # one line: a termination message or log tail may span many
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def _terminated_failure(state: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    terminated = (state or {}).get("terminated")
    if terminated and int(terminated.get("exitCode") or 0) != 0:
        return dict(terminated)
    return None


def _exit_text(terminated: Mapping[str, Any]) -> str:
    text = f"exit code {terminated.get('exitCode')}"
    if terminated.get("reason") and terminated.get("reason") != "Error":
        text += f" ({terminated['reason']})"
    message = str(terminated.get("message") or "").strip()
    return f"{text}: {message}" if message else text


def _pod_failure(pod: Mapping[str, Any]) -> Check | None:
    name = pod["metadata"].get("name", "?")
    status = pod.get("status") or {}
    scheduled = _conditions(pod).get("PodScheduled", {})
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        message = f"pod {name}: {scheduled.get('message') or 'unschedulable'}"
        return Check(False, UNSCHEDULABLE, _clip(message))
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _IMAGE_PULL:
                detail = waiting.get("message") or container.get("image") or ""
                return Check(
                    False,
                    IMAGE_PULL_FAILED,
                    _clip(f"pod {name}, container {container.get('name')}: {waiting['reason']}: {detail}"),
                )
    for container in status.get("initContainerStatuses") or []:
        if container.get("name") != INIT_CONTAINER:
            continue
        # Failed now, or failed before and waiting to be restarted (CrashLoopBackOff); a failure
        # in lastState no longer counts once the container runs or has completed.
        state = container.get("state") or {}
        failed = _terminated_failure(state)
        if failed is None and "waiting" in state:
            failed = _terminated_failure(container.get("lastState"))
        if failed is not None:
            restarts = int(container.get("restartCount") or 0)
            tries = f" (tried {restarts + 1} times)" if restarts else ""
            message = f"pod {name}: {INIT_CONTAINER} failed{tries}: {_exit_text(failed)}"
            return Check(False, STORAGE_INIT_FAILED, _clip(message))
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") != "CrashLoopBackOff":
            continue
        last = ((container.get("lastState") or {}).get("terminated")) or {}
        restarts = int(container.get("restartCount") or 0)
        detail = _exit_text(last) if last else str(waiting.get("message") or "")
        return Check(
            False,
            CRASH_LOOP,
            _clip(f"pod {name}: container {container.get('name')} restarted {restarts} times; last {detail}"),
        )
    return None


def diagnose(*, deployment: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> Check | None:
    """The first reason found why the web service does not come up, or None. Pods (newest first)
    say more than the Deployment, so they come first; then the Deployment's progress deadline."""
    for pod in pods:
        found = _pod_failure(pod)
        if found is not None:
            return found
    if deployment is not None:
        progressing = _conditions(deployment).get("Progressing", {})
        if progressing.get("status") == "False" and progressing.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
            message = str(progressing.get("message") or "the rollout made no progress")
            return Check(False, PROGRESS_DEADLINE_EXCEEDED, _clip(message))
    return None
