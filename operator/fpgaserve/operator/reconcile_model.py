"""Reconcilers of FpgaModels: source checks, the package's manifest, users, and held deletions.

Role: the model half of the reconcile layer (``fpgaserve.operator.reconcile_webservice`` has the
web service half, ``fpgaserve.operator.cycle`` the shared ``Outcome``), called by
``fpgaserve.operator.handlers``. A model is Ready when
its source is well-formed, its credentials Secret exists and, for http(s) sources the operator can
reach, its manifest is valid; its status lists the web services that use it, and its deletion is
refused (the finalizer holds) while there are any.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from fpgaserve.api.crd_models import FpgaModelSpec
from fpgaserve.api.kinds import FPGAMODEL, FPGAWEBSERVICE, SECRET, ApiError
from fpgaserve.api.manifest import ManifestError
from fpgaserve.api.sigv4 import Credentials
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.cycle import Event, Outcome, api_check, identity, transition_events
from fpgaserve.operator.kube import Kube
from fpgaserve.operator.packages import PackageUnreachable, read_package_info, s3_head_request
from fpgaserve.operator.status import Check, model_status, now_iso, status_patch
from fpgaserve.operator.validation import SpecError, parse_model

__all__ = ["reconcile_model", "refresh_users", "release_model", "users_of_model"]

_PACKAGE_FIELDS = ("pipeline", "deviceMemoryBytes", "sizeBytes")


async def users_of_model(kube: Kube, namespace: str, name: str) -> list[str]:
    """Names of the web services in ``namespace`` that deploy the model ``name`` (not those being
    deleted: they are on their way out)."""
    services = await kube.list(FPGAWEBSERVICE, namespace)
    return sorted(
        ws["metadata"]["name"]
        for ws in services
        if (ws.get("spec") or {}).get("model") == name and not ws["metadata"].get("deletionTimestamp")
    )


async def refresh_users(*, kube: Kube, namespace: str, name: str) -> None:
    """Bring the model's ``usedBy`` up to date now (a web service came, went, or changed model),
    rather than at the model's next resync; nothing when the model is absent or already right."""
    model = await kube.get(FPGAMODEL, namespace, name)
    if model is None or model["metadata"].get("deletionTimestamp"):
        return  # a held deletion is release_model's, which rechecks the users itself
    users = await users_of_model(kube, namespace, name)
    if users != (model.get("status") or {}).get("usedBy"):
        await kube.patch(FPGAMODEL, namespace, name, {"status": {"usedBy": users}}, subresource="status")


async def _inspect_package(
    kube: Kube, namespace: str, spec: FpgaModelSpec, previous: Mapping[str, Any], digest: str
) -> tuple[Check | None, dict[str, Any]]:
    """Read the manifest of an http(s) or s3 package, once per digest; None when the operator cannot."""
    if spec.source.scheme not in ("http", "https", "s3"):
        return None, {}
    known = {k: previous.get(k) for k in _PACKAGE_FIELDS}
    if previous.get("digest") == digest and previous.get("pipeline"):
        return _previous_check(previous, "ManifestRead"), known
    data: dict[str, str] = {}
    if spec.source.secret_ref is not None:
        secret = await kube.get(SECRET, namespace, spec.source.secret_ref.name)
        data = _secret_fields(secret or {}, name=spec.source.secret_ref.name)
    uri, headers, token = spec.source.uri, None, data.get("token")
    if spec.source.scheme == "s3":
        key_id, secret_key = data.get("AWS_ACCESS_KEY_ID"), data.get("AWS_SECRET_ACCESS_KEY")
        credentials = (
            Credentials(key_id, secret_key, data.get("AWS_SESSION_TOKEN")) if key_id and secret_key else None
        )
        region = data.get("AWS_REGION") or data.get("AWS_DEFAULT_REGION")
        uri, headers = s3_head_request(
            uri, endpoint=spec.source.endpoint, credentials=credentials, region=region
        )
        token = None
    try:
        info = await read_package_info(uri, token=token, headers=headers)
    except PackageUnreachable as exc:
        return Check(None, "Unreachable", f"{exc}; storage-init will try from the pod"), {}
    except ManifestError as exc:
        return Check(False, "InvalidManifest", str(exc)), {}
    pipeline = [
        {
            "name": stage.name,
            "kind": stage.kind,
            **({"deviceMemoryBytes": stage.weight_bytes} if stage.kind == "fpga" else {}),
        }
        for stage in info.manifest.pipeline
    ]
    found = {
        "pipeline": pipeline,
        "deviceMemoryBytes": info.manifest.device_memory_bytes,
        "sizeBytes": info.size_bytes,
    }
    stages = " -> ".join(f"{s.name} ({s.kind})" for s in info.manifest.pipeline)
    return Check(True, "Read", f"{info.manifest.name} {info.manifest.version}: {stages}"), found


# The fields of a source Secret the operator reads; anything else in it (a binary CA bundle, say) is
# storage-init's business or nobody's, and is never decoded here.
_SECRET_FIELDS = (
    "token",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


class SecretFieldError(Exception):
    """A field the operator needs from the source Secret is not base64 of UTF-8 text (the message
    names the Secret and the field, never the value)."""


def _secret_fields(secret: Mapping[str, Any], *, name: str) -> dict[str, str]:
    encoded = secret.get("data") or {}
    fields: dict[str, str] = {}
    for field in _SECRET_FIELDS:
        value = encoded.get(field)
        if value is None:
            continue
        try:
            fields[field] = base64.b64decode(value, validate=True).decode("utf-8").strip()
        except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
            raise SecretFieldError(f"Secret {name} (source.secretRef): {field} is not UTF-8 text") from None
    return fields


async def reconcile_model(*, kube: Kube, config: OperatorConfig, body: Mapping[str, Any]) -> Outcome:
    """One cycle for a model: check its source (and, where reachable, its manifest) and record who
    uses it."""
    name, namespace, _, generation = identity(body)
    previous: Mapping[str, Any] = body.get("status") or {}
    digest: str | None = None
    manifest: Check | None = None
    package: dict[str, Any] = {}
    try:
        spec = parse_model(body)
        digest = f"sha256:{spec.source.sha256}"
        source = Check(True, "Valid", f"{spec.source.scheme}:// source with a sha256 digest")
        ref = spec.source.secret_ref
        if ref is not None and await kube.get(SECRET, namespace, ref.name) is None:
            source = Check(False, "SecretNotFound", f"Secret {ref.name} (source.secretRef) not found")
        else:
            manifest, package = await _inspect_package(kube, namespace, spec, previous, digest)
        used_by = await users_of_model(kube, namespace, name)
    except SecretFieldError as exc:
        source, used_by = Check(False, "SecretInvalid", str(exc)), list(previous.get("usedBy") or [])
    except SpecError as exc:
        source, used_by = (
            Check(False, exc.reason, exc.message, permanent=True),
            list(previous.get("usedBy") or []),
        )
    except ApiError as exc:
        source, used_by = api_check(exc), list(previous.get("usedBy") or [])
    new = model_status(
        previous=previous,
        generation=generation,
        now=now_iso(),
        source=source,
        digest=digest,
        used_by=used_by,
        manifest=manifest,
        package=package,
    )
    error = next((c for c in (source, manifest) if c is not None and c.ok is False), None)
    return Outcome(
        status=status_patch(previous, new), events=transition_events(previous, new, error), error=error
    )


def _previous_check(previous: Mapping[str, Any], kind: str) -> Check:
    condition = next((c for c in previous.get("conditions") or [] if c.get("type") == kind), None)
    if condition is None:
        return Check(None, "Unknown")
    ok = {"True": True, "False": False}.get(str(condition.get("status")))
    return Check(ok, str(condition.get("reason") or ""), str(condition.get("message") or ""))


async def release_model(*, kube: Kube, config: OperatorConfig, body: Mapping[str, Any]) -> Outcome:
    """A model being deleted: an error (retried, so the finalizer holds) while web services use it."""
    name, namespace, _, generation = identity(body)
    previous: Mapping[str, Any] = body.get("status") or {}
    users = await users_of_model(kube, namespace, name)
    if not users:
        return Outcome(events=[Event("Normal", "Released", "no FpgaWebservice uses this model")])
    held = Check(True, "InUse", "deletion waits for FpgaWebservice " + ", ".join(users))
    source = _previous_check(previous, "SourceValid")
    known = {k: previous.get(k) for k in _PACKAGE_FIELDS}
    manifest = _previous_check(previous, "ManifestRead") if previous.get("pipeline") else None
    new = model_status(
        previous=previous,
        generation=generation,
        now=now_iso(),
        source=source,
        digest=previous.get("digest"),
        used_by=users,
        manifest=manifest,
        package=known,
        deleting=held,
    )
    error = Check(False, "InUse", held.message)
    events = transition_events(previous, new, error)
    return Outcome(status=status_patch(previous, new), events=events, error=error)
