"""Status computation: conditions keep their transition times, and unchanged status writes nothing."""

from __future__ import annotations

from typing import Any

from fpgaserve.api.crd_models import FpgaWebserviceSpec
from fpgaserve.operator.status import (
    Check,
    deployment_availability,
    model_status,
    set_conditions,
    status_patch,
    webservice_status,
)

SPEC = FpgaWebserviceSpec.model_validate({"model": "m"})
OK = Check(True, "Ready")


def available_deployment(ready: int = 1) -> dict[str, Any]:
    return {
        "spec": {"replicas": 1},
        "status": {"readyReplicas": ready, "conditions": [{"type": "Available", "status": "True"}]},
    }


def ws_status(previous: dict[str, Any], now: str, **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "model_ready": OK,
        "deployed": OK,
        "deployment": available_deployment(),
        "spec": SPEC,
    }
    return webservice_status(previous=previous, generation=3, now=now, **{**args, **kwargs})


def test_transition_time_moves_only_on_change() -> None:
    first = set_conditions([], {"A": Check(True, "Fine")}, now="t1", generation=1)
    same = set_conditions(first, {"A": Check(True, "StillFine")}, now="t2", generation=2)
    flipped = set_conditions(same, {"A": Check(False, "Broken")}, now="t3", generation=2)
    assert first[0]["lastTransitionTime"] == "t1"
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["reason"] == "StillFine"
    assert flipped[0]["lastTransitionTime"] == "t3" and flipped[0]["status"] == "False"


def test_ready_webservice() -> None:
    status = ws_status({}, "t1", url="https://h/", keys_secret="web-keys", model_digest="sha256:ab")
    assert status["phase"] == "Ready"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "ModelReady": "True",
        "Deployed": "True",
        "Available": "True",
        "Ready": "True",
    }
    assert (status["replicas"], status["readyReplicas"], status["observedGeneration"]) == (1, 1, 3)
    assert status["url"] == "https://h/" and status["keysSecret"] == "web-keys"


def test_phases() -> None:
    missing = Check(False, "ModelNotFound", "no such model")
    assert ws_status({}, "t", model_ready=missing, deployed=Check(None, "Waiting"))["phase"] == "Pending"
    invalid = Check(False, "InvalidSpec", "bad", permanent=True)
    failed = ws_status({}, "t", model_ready=Check(None, "Waiting"), deployed=invalid)
    assert failed["phase"] == "Failed"
    ready = {c["type"]: c for c in failed["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    rolling = ws_status({}, "t", deployment={"spec": {"replicas": 2}, "status": {}})
    assert rolling["phase"] == "Deploying"


def test_unchanged_status_is_an_empty_patch() -> None:
    first = ws_status({}, "t1")
    assert status_patch({}, first)["phase"] == "Ready"
    again = ws_status(first, "t2")
    assert status_patch(first, again) == {}  # same facts later: nothing to write


def test_patch_removes_vanished_fields() -> None:
    assert status_patch({"url": "http://h/", "phase": "Ready"}, {"url": None, "phase": "Ready"}) == {
        "url": None
    }
    assert status_patch({}, {"url": None}) == {}


def test_deployment_availability() -> None:
    assert deployment_availability(None)[0].ok is None
    check, replicas, ready = deployment_availability(available_deployment(ready=1))
    assert check.ok and (replicas, ready) == (1, 1)
    down = {"spec": {"replicas": 2}, "status": {"conditions": [{"type": "Available", "status": "False",
                                                                "reason": "MinimumReplicasUnavailable"}]}}  # fmt: skip
    check, _, ready = deployment_availability(down)
    assert check.ok is False and check.reason == "MinimumReplicasUnavailable" and ready == 0


def test_model_status() -> None:
    status = model_status(
        previous={}, generation=1, now="t", source=OK, digest="sha256:ab", used_by=["b", "a"]
    )
    assert status["phase"] == "Ready" and status["usedBy"] == ["a", "b"]
    held = model_status(
        previous=status, generation=1, now="t2", source=OK, digest="sha256:ab", used_by=["a"],
        deleting=Check(True, "InUse", "deletion waits for FpgaWebservice a"),
    )  # fmt: skip
    assert held["phase"] == "Terminating"
    assert {c["type"]: c["reason"] for c in held["conditions"]}["Deleting"] == "InUse"
    bad = model_status(
        previous={}, generation=1, now="t", source=Check(False, "InvalidSource", "x", permanent=True),
        digest=None, used_by=[],
    )  # fmt: skip
    assert bad["phase"] == "Failed"
