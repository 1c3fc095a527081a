"""The kopf handlers of FpgaModel and FpgaWebservice, registered into a registry of the caller's.

Role: the kopf face of the operator, used by ``fpgaserve.operator.runner`` (and by the tests, one
registry per test). Handlers are thin: they call a reconciler (``reconcile``, ``models``)
and turn its ``Outcome`` into a status patch, Kubernetes Events, and kopf's retry semantics: a
spec that cannot work is a ``kopf.PermanentError`` (retried only when the spec changes), anything
else a ``kopf.TemporaryError`` with exponential backoff, never a crash. A web service's cycles all
go through one ``Refresher`` (one at a time per web service, its status written by the cycle).

Besides the custom resources, the operator watches what its web services own (``OWNED_WATCHES``:
Deployments, Services, Ingresses, and pods, for why they do not come up), selected by the label
``fpgaserve.io/webservice``: any change there refreshes the owner within moments (its status, and
an owned object deleted or edited by hand is restored). Periodic resyncs (timers) remain as a
safety net; they report through the status and Events and never raise, so that the change
handlers alone own the retries.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from fpgaserve.api.crd_models import (
    GROUP,
    MODEL_PLURAL,
    REGENERATE_KEY_ANNOTATION,
    VERSION,
    WEBSERVICE_PLURAL,
)
from fpgaserve.api.kinds import ApiError
from fpgaserve.api.naming import WEBSERVICE_LABEL
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.cycle import Outcome
from fpgaserve.operator.kube import Kube
from fpgaserve.operator.reconcile_model import reconcile_model, refresh_users, release_model
from fpgaserve.operator.reconcile_webservice import regenerate_key
from fpgaserve.operator.refresh import Refresher

__all__ = ["OWNED_WATCHES", "register"]

WEBSERVICES = (GROUP, VERSION, WEBSERVICE_PLURAL)
MODELS = (GROUP, VERSION, MODEL_PLURAL)
# What the operator watches of the objects its web services own: (group, version, plural), "" for
# the core group. Not Secrets (watching them would mean reading every Secret in the namespace),
# nor HorizontalPodAutoscalers and PodDisruptionBudgets (their status changes all the time, for
# nothing the web service reports): the resync corrects those.
OWNED_WATCHES: tuple[tuple[str, str, str], ...] = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("networking.k8s.io", "v1", "ingresses"),
    ("", "v1", "pods"),
)

logger = logging.getLogger(__name__)


def _report(outcome: Outcome, *, body: kopf.Body, patch: kopf.Patch) -> None:
    for key, value in outcome.status.items():
        patch.status[key] = value
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _finish(
    outcome: Outcome, *, body: kopf.Body, patch: kopf.Patch, retry: int, config: OperatorConfig
) -> None:
    """Report, then raise what kopf needs to retry (or not) a failed cycle."""
    _report(outcome, body=body, patch=patch)
    _raise_for(outcome, retry=retry, config=config)


def _raise_for(outcome: Outcome, *, retry: int, config: OperatorConfig) -> None:
    error = outcome.error
    if error is None:
        return
    if error.permanent:
        raise kopf.PermanentError(f"{error.reason}: {error.message}")
    raise kopf.TemporaryError(f"{error.reason}: {error.message}", delay=config.backoff(retry))


def register(registry: kopf.OperatorRegistry, *, kube: Kube, config: OperatorConfig) -> None:
    """Register every handler of the operator into ``registry``."""

    refresher = Refresher(kube=kube, config=config)

    async def webservice(body: kopf.Body, retry: int, **_: Any) -> None:
        try:
            outcome = await refresher.refresh(body.metadata.namespace or "", body.metadata.name or "")
        except ApiError as exc:  # reading the model or the web service's own objects failed
            raise kopf.TemporaryError(str(exc), delay=config.backoff(retry)) from None
        if outcome is not None:
            _raise_for(outcome, retry=retry, config=config)

    async def webservice_resync(body: kopf.Body, **_: Any) -> None:
        try:
            await refresher.refresh(body.metadata.namespace or "", body.metadata.name or "", coalesce=True)
        except ApiError:
            return  # the next resync tries again

    async def owned_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
        if type is None:  # kopf's initial listing: the web services' resume handlers see to those
            return
        name = body.metadata.labels.get(WEBSERVICE_LABEL)
        if not name or not body.metadata.namespace:
            return
        try:
            await refresher.refresh(body.metadata.namespace, name, coalesce=True)
        except ApiError as exc:
            logger.warning(
                "refreshing %s/%s failed (the resync tries again): %s", body.metadata.namespace, name, exc
            )

    async def model_users(body: kopf.Body, old: Any, new: Any, reason: str, **_: Any) -> None:
        # A web service came, went, or moved to another model: those models' usedBy, at once.
        namespace = body.metadata.namespace or ""
        names = {old, new} if reason == "update" else {(body.get("spec") or {}).get("model")}
        for model_name in sorted(str(n) for n in names if n):
            try:
                await refresh_users(kube=kube, namespace=namespace, name=model_name)
            except ApiError as exc:  # never hold a web service's deletion: the model's resync corrects
                logger.warning("updating usedBy of FpgaModel %s/%s failed: %s", namespace, model_name, exc)

    async def key_regeneration(body: kopf.Body, patch: kopf.Patch, new: Any, retry: int, **_: Any) -> None:
        outcome = await regenerate_key(kube=kube, body=body, slot=str(new))
        _finish(outcome, body=body, patch=patch, retry=retry, config=config)
        patch.metadata.annotations[REGENERATE_KEY_ANNOTATION] = None  # done: the request is consumed

    async def model(body: kopf.Body, patch: kopf.Patch, retry: int, **_: Any) -> None:
        try:
            outcome = await reconcile_model(kube=kube, config=config, body=body)
        except ApiError as exc:
            raise kopf.TemporaryError(str(exc), delay=config.backoff(retry)) from None
        _finish(outcome, body=body, patch=patch, retry=retry, config=config)

    async def model_resync(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        try:
            outcome = await reconcile_model(kube=kube, config=config, body=body)
        except ApiError:
            return
        _report(outcome, body=body, patch=patch)

    async def model_deletion(body: kopf.Body, patch: kopf.Patch, retry: int, **_: Any) -> None:
        # An error keeps kopf's finalizer on the model: it is deleted once no web service uses it.
        try:
            outcome = await release_model(kube=kube, config=config, body=body)
        except ApiError as exc:
            raise kopf.TemporaryError(str(exc), delay=config.backoff(retry)) from None
        _finish(outcome, body=body, patch=patch, retry=retry, config=config)

    every = config.resync_seconds
    kopf.on.resume(*WEBSERVICES, id="webservice", registry=registry)(webservice)
    kopf.on.create(*WEBSERVICES, id="webservice", registry=registry)(webservice)
    kopf.on.update(*WEBSERVICES, id="webservice", field="spec", registry=registry)(webservice)
    kopf.timer(*WEBSERVICES, id="resync", interval=every, initial_delay=every, registry=registry)(
        webservice_resync
    )
    kopf.on.create(*WEBSERVICES, id="model-users", registry=registry)(model_users)
    kopf.on.update(*WEBSERVICES, id="model-users", field="spec.model", registry=registry)(model_users)
    kopf.on.delete(*WEBSERVICES, id="model-users", optional=True, registry=registry)(model_users)
    kopf.on.field(
        *WEBSERVICES,
        id="regenerate-key",
        field=("metadata", "annotations", REGENERATE_KEY_ANNOTATION),
        new=kopf.PRESENT,
        registry=registry,
    )(key_regeneration)

    for group, version, plural in OWNED_WATCHES:
        resource = (group, version, plural) if group else (version, plural)
        kopf.on.event(
            *resource, id=f"owned-{plural}", labels={WEBSERVICE_LABEL: kopf.PRESENT}, registry=registry
        )(owned_changed)

    kopf.on.resume(*MODELS, id="model", registry=registry)(model)
    kopf.on.create(*MODELS, id="model", registry=registry)(model)
    kopf.on.update(*MODELS, id="model", field="spec", registry=registry)(model)
    kopf.timer(*MODELS, id="resync", interval=every, initial_delay=every, registry=registry)(model_resync)
    kopf.on.delete(*MODELS, id="in-use", registry=registry)(model_deletion)
