"""Why pods do not come up, from pod and Deployment statuses as the kubelet and controllers write them."""

from __future__ import annotations

from typing import Any

import pytest

from fpgaserve.api.conditions import (
    CRASH_LOOP,
    IMAGE_PULL_FAILED,
    PROGRESS_DEADLINE_EXCEEDED,
    STORAGE_INIT_FAILED,
    UNSCHEDULABLE,
    WEBSERVICE_READY_REASONS,
    WORKLOAD_FAILURES,
)
from fpgaserve.operator.cycle import transition_events
from fpgaserve.operator.diagnosis import diagnose, needs_pods, pods_of
from fpgaserve.operator.status import Check, webservice_status


def pod(
    status: dict[str, Any], *, name: str = "web-1", created: str = "2026-01-01T00:00:00Z"
) -> dict[str, Any]:
    labels = {"fpgaserve.io/webservice": "web"}
    return {"metadata": {"name": name, "labels": labels, "creationTimestamp": created}, "status": status}


def init_status(
    state: dict[str, Any], last: dict[str, Any] | None = None, restarts: int = 0
) -> dict[str, Any]:
    container = {"name": "storage-init", "state": state, "restartCount": restarts}
    if last is not None:
        container["lastState"] = last
    return {"initContainerStatuses": [container]}


MISMATCH = {
    "terminated": {"exitCode": 2, "reason": "Error", "message": "file:///p.zip: sha256 mismatch\nmore"}
}


@pytest.mark.parametrize(
    ("status", "reason", "words"),
    [
        (init_status(MISMATCH), STORAGE_INIT_FAILED, "storage-init failed: exit code 2: file:///p.zip: sha256 mismatch more"),
        (init_status({"waiting": {"reason": "CrashLoopBackOff"}}, MISMATCH, restarts=3), STORAGE_INIT_FAILED,
         "tried 4 times"),
        ({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                          "message": "0/3 nodes are available: 3 Insufficient fpgaserve.io/fpga."}]},
         UNSCHEDULABLE, "3 Insufficient fpgaserve.io/fpga"),
        ({"containerStatuses": [{"name": "server", "image": "x:1", "state": {"waiting": {
            "reason": "ImagePullBackOff", "message": "Back-off pulling image \"x:1\""}}}]},
         IMAGE_PULL_FAILED, "container server: ImagePullBackOff: Back-off pulling image"),
        ({"containerStatuses": [{"name": "server", "restartCount": 5,
                                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                 "lastState": {"terminated": {"exitCode": 1, "message": "no FPGA allocated"}}}]},
         CRASH_LOOP, "restarted 5 times; last exit code 1: no FPGA allocated"),
    ],
)  # fmt: skip
def test_pod_failures(status: dict[str, Any], reason: str, words: str) -> None:
    found = diagnose(deployment=None, pods=[pod(status)])
    assert found is not None and found.ok is False and found.reason == reason
    assert found.message.startswith("pod web-1") and words in found.message
    assert "\n" not in found.message


def test_recovered_and_waiting_pods_are_no_failure() -> None:
    completed = {"terminated": {"exitCode": 0, "reason": "Completed"}}
    assert diagnose(deployment=None, pods=[pod(init_status(completed, MISMATCH, restarts=1))]) is None
    assert (
        diagnose(deployment=None, pods=[pod({"conditions": [{"type": "PodScheduled", "status": "True"}]})])
        is None
    )
    assert diagnose(deployment=None, pods=[pod(init_status({"running": {}}))]) is None


def test_progress_deadline_and_when_pods_are_read() -> None:
    deployment: dict[str, Any] = {"spec": {"replicas": 2}, "status": {"readyReplicas": 2, "conditions": [
        {"type": "Available", "status": "True"},
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "web-5d4" has timed out progressing.'}]}}  # fmt: skip
    found = diagnose(deployment=deployment, pods=[])
    assert found is not None and found.reason == PROGRESS_DEADLINE_EXCEEDED and "timed out" in found.message
    assert not needs_pods(deployment)  # all ready: no pod listing
    deployment["status"]["readyReplicas"] = 1
    assert needs_pods(deployment) and not needs_pods(None)


def test_pods_of_picks_the_service_newest_first() -> None:
    old, new = pod({}, name="old"), pod({}, name="new", created="2026-02-01T00:00:00Z")
    other = pod({}, name="other")
    other["metadata"]["labels"] = {"fpgaserve.io/webservice": "else"}
    going = pod({}, name="going")
    going["metadata"]["deletionTimestamp"] = "2026-02-02T00:00:00Z"
    assert [
        p["metadata"]["name"] for p in pods_of([old, other, new, going], {"fpgaserve.io/webservice": "web"})
    ] == [
        "new",
        "old",
    ]


def test_a_failure_fails_the_phase_with_a_warning_and_recovery_clears_it() -> None:
    ok = Check(True, "Ready")
    applied = Check(True, "Applied")
    deployment = {"spec": {"replicas": 1}, "status": {"conditions": [{"type": "Available", "status": "False",
                                                                        "reason": "MinimumReplicasUnavailable"}]}}  # fmt: skip
    failure = Check(False, UNSCHEDULABLE, "pod web-1: 0/1 nodes are available")
    common: dict[str, Any] = {"generation": 1, "now": "t", "model_ready": ok, "deployed": applied,
                              "deployment": deployment, "spec": None}  # fmt: skip
    deploying = webservice_status(previous={}, **common)
    failed = webservice_status(previous=deploying, failure=failure, **common)
    assert failed["phase"] == "Failed"
    ready = next(c for c in failed["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", UNSCHEDULABLE, failure.message)
    (event,) = transition_events(deploying, failed, None)
    assert (event.type, event.reason, event.message) == ("Warning", UNSCHEDULABLE, failure.message)
    recovered = webservice_status(previous=failed, **common)
    assert recovered["phase"] == "Deploying"
    (event,) = transition_events(failed, recovered, None)
    assert event.type == "Normal"


def test_every_failure_reason_is_documented() -> None:
    assert set(WORKLOAD_FAILURES) <= set(WEBSERVICE_READY_REASONS)
    assert all(WEBSERVICE_READY_REASONS[r][:2] == ("False", "Failed") for r in WORKLOAD_FAILURES)
