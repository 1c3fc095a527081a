"""Assembling and running the operator: kopf settings, a registry of handlers, and the run loop.

Role: called by ``python -m fpgaserve.operator`` and ``fpgaserve operator`` (``fpgaserve.operator.cli``), and by the tests and the
benchmark with a Kube wrapper pointed at kmock. Kopf keeps its bookkeeping in ``kopf.fpgaserve.io/``
annotations (never in the status, which the CRD declares field by field), its finalizer is
``fpgaserve.io/finalizer``, and it posts only the Events the handlers post themselves.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable, Collection
from typing import Any

import kopf

from fpgaserve.api.crd_models import GROUP
from fpgaserve.api.naming import WEBSERVICE_LABEL
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.handlers import OWNED_WATCHES, register
from fpgaserve.operator.kube import Kube

__all__ = ["FINALIZER", "make_registry", "make_settings", "peering_priority", "run"]

FINALIZER = f"{GROUP}/finalizer"
# kopf ignores every annotation under its storage prefix when it compares objects, so it must not
# be the API group: users set fpgaserve.io/regenerate-key, and kopf must see that change.
KOPF_PREFIX = f"kopf.{GROUP}"
LoginFn = Callable[..., Any]

logger = logging.getLogger(__name__)


def make_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.posting.loggers = False  # Events are what the handlers post, not kopf's log lines
    # Namespaces are given exactly; listing them would need cluster-wide RBAC for nothing.
    settings.scanning.disabled = True
    # A resync timer caught mid-cycle by a deletion (waiting for a cycle of a watch, say) ends in
    # moments; kopf's default of checking again after 60 s would hold the deletion that long.
    settings.background.cancellation_polling = 0.5
    # The API server sends only the owned objects' events (the handlers filter by label too).
    for group, version, plural in OWNED_WATCHES:
        settings.watching.label_selectors[group, version, plural] = WEBSERVICE_LABEL
    return settings


def make_registry(
    *, kube: Kube, config: OperatorConfig, login: LoginFn | None = None
) -> kopf.OperatorRegistry:
    """A fresh registry with every handler; ``login`` authenticates kopf's own API client
    (default: the kubernetes client's in-cluster or kubeconfig credentials)."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login or kopf.login_via_client)
    register(registry, kube=kube, config=config)
    return registry


def peering_priority() -> int:
    """A random peering priority. kopf freezes every replica that shares the highest priority (none
    may act), so replicas started from one template must not all get the same default; a 31-bit
    draw makes a tie between a handful of replicas vanishingly unlikely."""
    return 1 + secrets.randbelow(2**31 - 2)


async def run(
    *,
    kube: Kube,
    config: OperatorConfig,
    namespaces: Collection[str] = (),
    clusterwide: bool = False,
    liveness_endpoint: str | None = None,
    peering_name: str | None = None,
    priority: int | None = None,
    peering_lifetime: int = 60,
    login: LoginFn | None = None,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or a signal arrives). Without ``peering_name``
    it runs standalone: one replica only.

    ``peering_lifetime`` (seconds, kopf's default 60) is how long this replica's keep-alive in the
    peering object counts for its peers: a standby takes over that long after an active replica
    that died without a clean exit (which removes its record at once). The tests shorten it.
    ``priority`` defaults to a random one (``peering_priority``)."""
    if peering_name is not None and priority is None:
        priority = peering_priority()
        logger.info("peering as %r with random priority %d", peering_name, priority)
    settings = make_settings()
    settings.peering.lifetime = peering_lifetime
    await kopf.operator(
        registry=make_registry(kube=kube, config=config, login=login),
        settings=settings,
        namespaces=list(namespaces),
        clusterwide=clusterwide,
        liveness_endpoint=liveness_endpoint,
        standalone=peering_name is None,
        peering_name=peering_name,
        priority=priority or 0,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )
