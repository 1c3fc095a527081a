"""One web service's reconcile cycle at a time, on fresh state, however many things ask for one.

Role: used by ``fpgaserve.operator.handlers``: kopf's change handlers and resync timer of an
FpgaWebservice, and the watches on the objects it owns (its Deployment, Service, Ingress, and its
pods), all run the web service's cycle through ``Refresher.refresh``. Per web service, one cycle
runs at a time (a lock), a burst of owned-object events while one runs becomes one more cycle (not
one per event), and each cycle reads the web service anew and writes its status itself, so that a
cycle never works from a status another cycle has already replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import kopf

from fpgaserve.api.kinds import FPGAWEBSERVICE
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.cycle import Outcome
from fpgaserve.operator.kube import Kube
from fpgaserve.operator.reconcile_webservice import reconcile_webservice

__all__ = ["Refresher", "post_events"]


def post_events(outcome: Outcome, *, body: Mapping[str, Any]) -> None:
    """Post the outcome's Events about ``body`` (through kopf's Event poster)."""
    target = kopf.Body(cast(kopf.RawBody, dict(body)))
    for event in outcome.events:
        kopf.event(target, type=event.type, reason=event.reason, message=event.message)


class Refresher:
    """Runs web services' cycles: serialised per web service, coalesced while one waits."""

    def __init__(self, *, kube: Kube, config: OperatorConfig) -> None:
        self._kube = kube
        self._config = config
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}  # lock, users
        self._waiting: dict[tuple[str, str], int] = {}  # cycles asked for, not started yet

    async def refresh(self, namespace: str, name: str, *, coalesce: bool = False) -> Outcome | None:
        """Reconcile the web service now (after a cycle already running for it) and write its
        status and Events; None when it is gone or being deleted, or, with ``coalesce``, when a
        cycle that will see the same state is already waiting. ApiError propagates."""
        key = (namespace, name)
        if coalesce and self._waiting.get(key):
            return None
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        self._waiting[key] = self._waiting.get(key, 0) + 1
        started = False
        try:
            async with lock:
                started = True
                self._unwait(key)
                return await self._cycle(namespace, name)
        finally:
            if not started:
                self._unwait(key)
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]  # nobody else holds or awaits it
            else:
                self._locks[key] = (lock, users - 1)

    def _unwait(self, key: tuple[str, str]) -> None:
        left = self._waiting[key] - 1
        if left:
            self._waiting[key] = left
        else:
            del self._waiting[key]

    async def _cycle(self, namespace: str, name: str) -> Outcome | None:
        body = await self._kube.get(FPGAWEBSERVICE, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        outcome = await reconcile_webservice(kube=self._kube, config=self._config, body=body)
        if outcome.status:
            await self._kube.patch(
                FPGAWEBSERVICE, namespace, name, {"status": outcome.status}, subresource="status"
            )
        post_events(outcome, body=body)
        return outcome
