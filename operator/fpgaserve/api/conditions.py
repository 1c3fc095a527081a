"""The reasons of the ``Ready`` condition of FpgaModels and FpgaWebservices: the status contract.

Role: dependency-free names shared by the operator (which writes them), the SDK and CLI (which read
them, e.g. ``wait_for_deployment`` stops on a failure reason) and ``fpgaserve.api.crdgen`` (which
lists every reason in ``docs/crds.md``). A web service that cannot come up has phase ``Failed`` and
``Ready=False`` with one of ``WORKLOAD_FAILURES``; the operator clears it when the cause goes away.
"""

from __future__ import annotations

__all__ = [
    "CRASH_LOOP",
    "IMAGE_PULL_FAILED",
    "MODEL_READY_REASONS",
    "PROGRESS_DEADLINE_EXCEEDED",
    "READY",
    "STORAGE_INIT_FAILED",
    "UNSCHEDULABLE",
    "WEBSERVICE_READY_REASONS",
    "WORKLOAD_FAILURES",
]

READY = "Ready"  # the condition type, and its reason when True

# Why a web service's pods do not come up (phase Failed; Ready=False with one of these).
STORAGE_INIT_FAILED = "StorageInitFailed"
IMAGE_PULL_FAILED = "ImagePullFailed"
CRASH_LOOP = "CrashLoop"
UNSCHEDULABLE = "Unschedulable"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"

WORKLOAD_FAILURES: tuple[str, ...] = (
    STORAGE_INIT_FAILED,
    IMAGE_PULL_FAILED,
    CRASH_LOOP,
    UNSCHEDULABLE,
    PROGRESS_DEADLINE_EXCEEDED,
)

# Every reason the Ready condition of an FpgaWebservice can carry: (status, phase, meaning).
WEBSERVICE_READY_REASONS: dict[str, tuple[str, str, str]] = {
    READY: ("True", "Ready", "the model is ready and the Deployment is available"),
    STORAGE_INIT_FAILED: (
        "False",
        "Failed",
        "the storage-init container exited with an error; the message is its termination message "
        "(sha256 mismatch, source unreachable, access forbidden, invalid package)",
    ),
    IMAGE_PULL_FAILED: ("False", "Failed", "ErrImagePull, ImagePullBackOff or InvalidImageName"),
    CRASH_LOOP: (
        "False",
        "Failed",
        "the server container is in CrashLoopBackOff; the message has its exit code and last "
        "termination message",
    ),
    UNSCHEDULABLE: (
        "False",
        "Failed",
        "no node can run a pod; the scheduler's message, e.g. Insufficient fpgaserve.io/fpga",
    ),
    PROGRESS_DEADLINE_EXCEEDED: (
        "False",
        "Failed",
        "the Deployment's rollout exceeded its progress deadline (Progressing=False)",
    ),
    "Waiting": ("Unknown", "Pending or Deploying", "nothing known yet: the model or the Deployment"),
    "NotDeployed": ("Unknown", "Deploying", "no Deployment yet"),
    "MinimumReplicasUnavailable": (
        "False",
        "Deploying",
        "the Deployment's own Available reason while pods start (any Available=False reason "
        "of the Deployment is passed through)",
    ),
    "ModelNotFound": ("False", "Pending", "the FpgaModel spec.model names does not exist"),
    "ModelNotReady": ("False", "Pending", "the FpgaModel is not Ready"),
    "ModelDeleting": ("False", "Pending", "the FpgaModel is being deleted"),
    "ModelInvalid": ("False", "Pending", "the FpgaModel's spec is invalid"),
    "TlsSecretNotFound": ("False", "Pending", "tls.secretName names no Secret"),
    "NotOwned": ("False", "Pending", "an object of the same name exists and belongs to someone else"),
    "ApiError": ("False", "Pending, or Failed for 400/422", "the Kubernetes API refused a request"),
    "InvalidSpec": ("False", "Failed", "the spec does not validate; the message names the field"),
    "InvalidName": ("False", "Failed", "the name is not a DNS-1035 label (it names the Service)"),
}

# Every reason the Ready condition of an FpgaModel can carry: (status, phase, meaning).
MODEL_READY_REASONS: dict[str, tuple[str, str, str]] = {
    READY: (
        "True",
        "Ready",
        "the source is well-formed, its Secret exists, its manifest is valid or unreadable",
    ),
    "InvalidSpec": ("False", "Failed", "the spec does not validate"),
    "InvalidSource": ("False", "Failed", "the source URI is malformed or holds credentials"),
    "SecretNotFound": ("False", "Pending", "source.secretRef names no Secret"),
    "InvalidManifest": ("False", "Pending", "the package's manifest.json is invalid"),
    "ApiError": ("False", "Pending, or Failed for 400/422", "the Kubernetes API refused a request"),
}
