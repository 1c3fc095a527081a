"""The kopf handlers of FpgaModel and FpgaWebservice, registered into a registry of the caller's.

Role: the kopf face of the operator, used by ``fpgaserve.operator.runner`` (and by the tests, one
registry per test). Handlers are thin: they call a reconciler (``reconcile``, ``models``)
and turn its ``Outcome`` into a status patch, Kubernetes Events, and kopf's retry semantics: a
spec that cannot work is a ``kopf.PermanentError`` (retried only when the spec changes), anything
else a ``kopf.TemporaryError`` with exponential backoff, never a crash.

Periodic resyncs (timers) correct drift and refresh the status; they report through the status and
Events and never raise, so that the change handlers alone own the retries.
"""

from __future__ import annotations

from typing import Any

import kopf

from fpgaserve.api.crd_models import (
    GROUP,
    MODEL_PLURAL,
    REGENERATE_KEY_ANNOTATION,
    VERSION,
    WEBSERVICE_PLURAL,
)
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.cycle import Outcome
from fpgaserve.operator.kube import ApiError, Kube
from fpgaserve.operator.reconcile_model import reconcile_model, release_model
from fpgaserve.operator.reconcile_webservice import reconcile_webservice, regenerate_key

__all__ = ["register"]

WEBSERVICES = (GROUP, VERSION, WEBSERVICE_PLURAL)
MODELS = (GROUP, VERSION, MODEL_PLURAL)


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
    error = outcome.error
    if error is None:
        return
    if error.permanent:
        raise kopf.PermanentError(f"{error.reason}: {error.message}")
    raise kopf.TemporaryError(f"{error.reason}: {error.message}", delay=config.backoff(retry))


def register(registry: kopf.OperatorRegistry, *, kube: Kube, config: OperatorConfig) -> None:
    """Register every handler of the operator into ``registry``."""

    async def webservice(body: kopf.Body, patch: kopf.Patch, retry: int, **_: Any) -> None:
        try:
            outcome = await reconcile_webservice(kube=kube, config=config, body=body)
        except ApiError as exc:  # reading the model or the web service's own objects failed
            raise kopf.TemporaryError(str(exc), delay=config.backoff(retry)) from None
        _finish(outcome, body=body, patch=patch, retry=retry, config=config)

    async def webservice_resync(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        try:
            outcome = await reconcile_webservice(kube=kube, config=config, body=body, resync=True)
        except ApiError:
            return  # the next resync tries again
        _report(outcome, body=body, patch=patch)

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
    kopf.on.field(
        *WEBSERVICES,
        id="regenerate-key",
        field=("metadata", "annotations", REGENERATE_KEY_ANNOTATION),
        new=kopf.PRESENT,
        registry=registry,
    )(key_regeneration)

    kopf.on.resume(*MODELS, id="model", registry=registry)(model)
    kopf.on.create(*MODELS, id="model", registry=registry)(model)
    kopf.on.update(*MODELS, id="model", field="spec", registry=registry)(model)
    kopf.timer(*MODELS, id="resync", interval=every, initial_delay=every, registry=registry)(model_resync)
    kopf.on.delete(*MODELS, id="in-use", registry=registry)(model_deletion)
