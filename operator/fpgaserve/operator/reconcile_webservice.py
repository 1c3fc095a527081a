"""Reconciling an FpgaWebservice into the objects and the status it should have.

Role: the layer between the kopf handlers (``fpgaserve.operator.handlers``, which only translate
an ``Outcome`` into a status patch, Events and kopf's retry errors) and the builders. Each cycle
detects (reads the spec and the live objects through ``Kube``), acts (builds the desired objects)
and applies (creates or patches only what differs, deletes what the spec no longer asks for), then
computes the status. Reconcilers are idempotent: the same input twice writes nothing the second
time, which is what makes resyncs and operator restarts harmless.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

from fpgaserve.api.crd_models import FpgaModelSpec, FpgaWebserviceSpec
from fpgaserve.api.kinds import (
    DEPLOYMENT,
    FPGAMODEL,
    HPA,
    INGRESS,
    PDB,
    POD,
    RESOURCECLAIMTEMPLATE,
    SECRET,
    ApiError,
    Kind,
    kind_of,
)
from fpgaserve.api.naming import (
    WEBSERVICE_LABEL,
    grpc_ingress_name,
    keys_secret_name,
    selector_labels,
    source_secret_name,
    tls_secret_name,
)
from fpgaserve.operator.claims import build_resource_claim_template, claim_template_name
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.cycle import Event, Outcome, api_check, identity, transition_events
from fpgaserve.operator.diagnosis import diagnose, needs_pods, pods_of
from fpgaserve.operator.kube import Change, Kube, NotOwnedError, is_subset, owned_by, with_managed_annotations
from fpgaserve.operator.networking import (
    build_grpc_ingress,
    build_hpa,
    build_ingress,
    build_pdb,
    build_service,
    external_url,
    internal_url,
)
from fpgaserve.operator.secrets import (
    KeySlot,
    build_keys_secret,
    build_tls_secret,
    keys_complete,
    regenerated,
    tls_hosts,
    tls_secret_current,
)
from fpgaserve.operator.status import Check, now_iso, status_patch, webservice_status
from fpgaserve.operator.validation import SpecError, parse_model, parse_webservice
from fpgaserve.operator.workload import build_deployment, build_source_secret

__all__ = ["reconcile_webservice", "regenerate_key"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ web services


async def _check_model(
    kube: Kube, namespace: str, name: str
) -> tuple[Check, FpgaModelSpec | None, int | None]:
    """Whether the model is ready, its spec, and the device memory its package needs (status)."""
    body = await kube.get(FPGAMODEL, namespace, name)
    if body is None:
        return Check(False, "ModelNotFound", f"FpgaModel {name} not found in {namespace}"), None, None
    if body["metadata"].get("deletionTimestamp"):
        return Check(False, "ModelDeleting", f"FpgaModel {name} is being deleted"), None, None
    try:
        spec = parse_model(body)
    except SpecError as exc:
        return Check(False, "ModelInvalid", f"FpgaModel {name}: {exc.message}"), None, None
    status = body.get("status") or {}
    phase = status.get("phase")
    if phase != "Ready":
        return Check(False, "ModelNotReady", f"FpgaModel {name} is {phase or 'not checked yet'}"), None, None
    memory = status.get("deviceMemoryBytes")
    return Check(True, "Ready", f"FpgaModel {name}"), spec, memory if isinstance(memory, int) else None


async def _ensure_claim_template(kube: Kube, owner: Mapping[str, Any], desired: dict[str, Any]) -> Change:
    """The ResourceClaimTemplate as built. Its spec is immutable in the API: a changed one (a new
    package needing more memory, another device model) is replaced, which new pods then use."""
    _, namespace, uid, _ = identity(owner)
    name = desired["metadata"]["name"]
    live = await kube.get(RESOURCECLAIMTEMPLATE, namespace, name)
    if live is not None:
        if not owned_by(live, uid):
            raise NotOwnedError(RESOURCECLAIMTEMPLATE, name)
        if is_subset(desired["spec"], live.get("spec")):
            _, change = await kube.apply(desired, owner_uid=uid)  # metadata only
            return change
        await kube.delete(RESOURCECLAIMTEMPLATE, namespace, name, uid=live["metadata"].get("uid"))
        await kube.create(with_managed_annotations(desired))
        return Change.UPDATED
    _, change = await kube.apply(desired, owner_uid=uid)
    return change


async def _ensure_keys(kube: Kube, owner: Mapping[str, Any]) -> Change:
    """The keys Secret exists with both keys; existing keys are never replaced here."""
    name, namespace, uid, _ = identity(owner)
    secret = keys_secret_name(name)
    live = await kube.get(SECRET, namespace, secret)
    if live is None:
        await kube.create(build_keys_secret(owner=owner))
        return Change.CREATED
    if not owned_by(live, uid):
        raise NotOwnedError(SECRET, secret)
    if keys_complete(live):
        return Change.UNCHANGED
    await kube.patch(SECRET, namespace, secret, {"data": regenerated(live, "primary")})
    return Change.UPDATED


async def _ensure_tls(kube: Kube, owner: Mapping[str, Any], hosts: list[str]) -> Change:
    """The self-signed certificate exists, covers ``hosts`` and is not about to expire."""
    name, namespace, uid, _ = identity(owner)
    secret = tls_secret_name(name)
    live = await kube.get(SECRET, namespace, secret)
    if live is None:
        await kube.create(build_tls_secret(owner=owner, hosts=hosts))
        return Change.CREATED
    if not owned_by(live, uid):
        raise NotOwnedError(SECRET, secret)
    if tls_secret_current(live, hosts=hosts, now=datetime.datetime.now(datetime.timezone.utc)):
        return Change.UNCHANGED
    fresh = build_tls_secret(owner=owner, hosts=hosts)
    await kube.patch(SECRET, namespace, secret, {"metadata": fresh["metadata"], "data": fresh["data"]})
    return Change.UPDATED


async def _prune(kube: Kube, kind: Kind, namespace: str, name: str, uid: str) -> Change:
    """Delete an object the spec no longer asks for, if it is ours."""
    live = await kube.get(kind, namespace, name)
    if live is None or not owned_by(live, uid):
        return Change.UNCHANGED
    deleted = await kube.delete(kind, namespace, name, uid=live["metadata"].get("uid"))
    return Change.UPDATED if deleted else Change.UNCHANGED


async def _apply_all(
    kube: Kube,
    *,
    owner: Mapping[str, Any],
    spec: FpgaWebserviceSpec,
    model: FpgaModelSpec,
    device_memory_bytes: int | None,
    config: OperatorConfig,
) -> tuple[dict[str, Any], dict[str, Change]]:
    """Apply every owned object concurrently; the live Deployment and what happened to each."""
    name, namespace, uid, _ = identity(owner)
    desired: list[dict[str, Any]] = [build_deployment(owner=owner, spec=spec, model=model, config=config)]
    desired.append(build_service(owner=owner, spec=spec))
    unwanted: list[tuple[Kind, str]] = []
    optional = (
        (INGRESS, build_ingress, name),
        (INGRESS, build_grpc_ingress, grpc_ingress_name(name)),
        (HPA, build_hpa, name),
        (PDB, build_pdb, name),
    )
    for kind, built, obj_name in optional:
        obj = built(owner=owner, spec=spec)
        if obj is None:
            unwanted.append((kind, obj_name))
        else:
            desired.append(obj)
    steps: dict[str, Awaitable[Any]] = {
        f"{obj['kind']} {obj['metadata']['name']}": kube.apply(obj, owner_uid=uid) for obj in desired
    }
    template = build_resource_claim_template(owner=owner, spec=spec, device_memory_bytes=device_memory_bytes)
    if template is not None:
        steps[f"ResourceClaimTemplate {template['metadata']['name']}"] = _ensure_claim_template(
            kube, owner, template
        )
    else:
        unwanted.append((RESOURCECLAIMTEMPLATE, claim_template_name(name)))
    if spec.auth.enabled:
        steps[f"Secret {keys_secret_name(name)}"] = _ensure_keys(kube, owner)
    else:
        unwanted.append((SECRET, keys_secret_name(name)))
    if spec.tls.mode == "SelfSigned":
        host = spec.ingress.host if spec.ingress is not None else None
        hosts = tls_hosts(
            name=name, namespace=namespace, cluster_domain=config.cluster_domain, ingress_host=host
        )
        steps[f"Secret {tls_secret_name(name)}"] = _ensure_tls(kube, owner, hosts)
    else:
        unwanted.append((SECRET, tls_secret_name(name)))
    source_secret = build_source_secret(owner=owner, model=model)
    if source_secret is not None:  # a presigned URL: storage-init reads it from this Secret
        steps[f"Secret {source_secret_name(name)}"] = kube.apply(source_secret, owner_uid=uid)
    else:
        unwanted.append((SECRET, source_secret_name(name)))
    for kind, obj_name in unwanted:
        steps[f"{kind.kind} {obj_name} (removed)"] = _prune(kube, kind, namespace, obj_name, uid)
    results = await asyncio.gather(*steps.values())
    changes: dict[str, Change] = {}
    deployment: dict[str, Any] = {}
    for what, result in zip(steps, results, strict=True):
        if isinstance(result, tuple):
            live, change = result
            if kind_of(live) == DEPLOYMENT:
                deployment = live
            changes[what] = change
        else:
            changes[what] = result
    return deployment, changes


def _deployed_before(previous: Mapping[str, Any], *, generation: int | None, model_digest: str) -> bool:
    """An earlier cycle applied this very spec and model: a change now is someone else's undone.

    Whatever started this cycle (a resync, a watched object's event, a retry of the change handler
    still pending), this is what makes it drift; a spec not reconciled yet is an update, a new model
    a rollout, and a web service whose objects were never applied is being created."""
    deployed = any(
        c.get("type") == "Deployed"
        and c.get("status") == "True"
        and c.get("observedGeneration") == generation
        for c in previous.get("conditions") or []
    )
    return (
        deployed
        and previous.get("observedGeneration") == generation
        and previous.get("modelDigest") == model_digest
    )


def _change_events(changes: Mapping[str, Change], *, drift: bool) -> list[Event]:
    events = []
    for what, change in changes.items():
        if change is Change.UNCHANGED:
            continue
        if what.endswith("(removed)"):
            events.append(Event("Normal", "Deleted", what.removesuffix(" (removed)")))
        elif drift:
            events.append(
                Event(
                    "Warning",
                    "DriftCorrected",
                    f"{what} was {'missing' if change is Change.CREATED else 'changed'}; restored",
                )
            )
        else:
            events.append(Event("Normal", change.value.capitalize(), what))
    return events


async def _diagnose(kube: Kube, namespace: str, name: str, deployment: Mapping[str, Any]) -> Check | None:
    """Why the Deployment's pods do not come up, if they do not; the pods are listed only while it
    is short of ready ones. A failed listing leaves the question open (the next cycle asks again)."""
    pods: list[Mapping[str, Any]] = []
    if needs_pods(deployment):
        try:
            listed = await kube.list(POD, namespace, label_selector=f"{WEBSERVICE_LABEL}={name}")
        except ApiError as exc:
            logger.warning("cannot list the pods of %s/%s: %s", namespace, name, exc)
            return None
        pods = pods_of(listed, selector_labels(name))
    return diagnose(deployment=deployment, pods=pods)


async def reconcile_webservice(*, kube: Kube, config: OperatorConfig, body: Mapping[str, Any]) -> Outcome:
    """One cycle for a web service: its objects and status. Changes to objects that an earlier
    cycle applied for the same spec and model are reported as drift corrected."""
    name, namespace, _, generation = identity(body)
    previous: Mapping[str, Any] = body.get("status") or {}
    unknown = Check(None, "Waiting")
    spec: FpgaWebserviceSpec | None = None
    model_ready, deployed, error = unknown, unknown, None
    deployment: dict[str, Any] | None = None
    events: list[Event] = []
    model: FpgaModelSpec | None = None
    failure: Check | None = None
    try:
        spec = parse_webservice(body)
        model_ready, model, device_memory = await _check_model(kube, namespace, spec.model)
        tls_secret = spec.tls.secret_name if spec.tls.mode == "Secret" else None
        if tls_secret is not None and await kube.get(SECRET, namespace, tls_secret) is None:
            deployed = Check(False, "TlsSecretNotFound", f"Secret {spec.tls.secret_name} not found")
        if model is not None and deployed is unknown:
            deployment, changes = await _apply_all(
                kube, owner=body, spec=spec, model=model, device_memory_bytes=device_memory, config=config
            )
            deployed = Check(True, "Applied", f"Deployment {name} and its companions")
            drift = _deployed_before(previous, generation=generation, model_digest=_digest(model))
            events += _change_events(changes, drift=drift)
            failure = await _diagnose(kube, namespace, name, deployment)
    except SpecError as exc:
        deployed = Check(False, exc.reason, exc.message, permanent=True)
    except (ApiError, NotOwnedError) as exc:
        deployed = api_check(exc)
    error = next((c for c in (model_ready, deployed) if c.ok is False), None)
    new = webservice_status(
        previous=previous,
        generation=generation,
        now=now_iso(),
        model_ready=model_ready,
        deployed=deployed,
        deployment=deployment,
        spec=spec,
        url=external_url(spec) if spec is not None else None,
        internal_url=(
            internal_url(name=name, namespace=namespace, spec=spec, cluster_domain=config.cluster_domain)
            if spec is not None
            else None
        ),
        keys_secret=keys_secret_name(name) if spec is not None and spec.auth.enabled else None,
        model_digest=_digest(model) if model is not None else None,
        failure=failure,
    )
    events += transition_events(previous, new, error)
    return Outcome(status=status_patch(previous, new), events=events, error=error)


def _digest(model: FpgaModelSpec) -> str:
    return f"sha256:{model.source.sha256}"


_SLOTS: dict[str, KeySlot] = {"primary": "primary", "secondary": "secondary"}


async def regenerate_key(*, kube: Kube, body: Mapping[str, Any], slot: str) -> Outcome:
    """Replace the primary or the secondary key in the web service's keys Secret."""
    name, namespace, uid, _ = identity(body)
    key_slot = _SLOTS.get(slot)
    if key_slot is None:
        message = "the regenerate-key annotation must be primary or secondary"
        return Outcome(events=[Event("Warning", "InvalidKeyName", message)])
    if ((body.get("spec") or {}).get("auth") or {}).get("enabled") is False:
        return Outcome(events=[Event("Warning", "AuthDisabled", "no keys to regenerate: auth is disabled")])
    secret = keys_secret_name(name)
    live = await kube.get(SECRET, namespace, secret)
    if live is None or not owned_by(live, uid):
        check = Check(False, "KeysNotFound", f"Secret {secret} not found (is auth enabled?)")
        return Outcome(events=[Event("Warning", check.reason, check.message)], error=check)
    await kube.patch(SECRET, namespace, secret, {"data": regenerated(live, key_slot)})
    return Outcome(events=[Event("Normal", "KeyRegenerated", f"{slot} key replaced in Secret {secret}")])
