"""Fixtures for the operator tests: kmock's emulator, a Kube wrapper on it, and the real operator.

``cluster`` is kmock's Kubernetes emulator on a local port (see ``tests/operator/cluster.py``);
``start_operator`` runs the real kopf operator (in a thread) with a fresh registry, short
resync and retry intervals, and stops it at the end of the test (or earlier, for restarts);
several can run at once (peering), each with API clients of its own when given a ``token``.
Example objects and polling helpers are in ``tests/operator/helpers.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any, Protocol

import kmock
import kopf
import pytest
from kubernetes.client import ApiClient, Configuration

from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.kube import Kube
from fpgaserve.operator.runner import run
from tests.operator.cluster import Cluster, declare_resources
from tests.operator.helpers import NAMESPACE
from tests.support.polling import DEADLINE


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with Cluster() as emulator, kmock.Server(emulator):
        declare_resources(emulator)
        yield emulator


@pytest.fixture
def config() -> OperatorConfig:
    return OperatorConfig(
        image="registry.example/fpgaserve:test", resync_seconds=0.5, retry_seconds=0.2, max_retry_seconds=1.0
    )


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[Kube]:
    wrapper = Kube(api_client=ApiClient(Configuration(host=str(cluster.url).rstrip("/"))))
    yield wrapper
    wrapper.close()


class StartOperator(Protocol):
    """``async with start_operator():`` runs the operator for the block (re-enterable: restarts).

    Keywords go to ``runner.run`` (``namespaces`` defaults to ``[NAMESPACE]``). With a ``token``,
    this instance's kopf and ``Kube`` clients are its own and send it as a bearer token, so that
    the request log tells instances apart (``helpers.sent_by``, ``helpers.writes_to(by=...)``)."""

    def __call__(
        self, *, token: str | None = None, **options: Any
    ) -> contextlib.AbstractAsyncContextManager[None]: ...


@pytest.fixture
def start_operator(cluster: Cluster, kube: Kube, config: OperatorConfig) -> StartOperator:
    server = str(cluster.url).rstrip("/")

    @contextlib.asynccontextmanager
    async def running(*, token: str | None = None, **options: Any) -> AsyncIterator[None]:
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server, token=token)

        own_kube = None
        if token is not None:
            own_kube = Kube(
                api_client=ApiClient(Configuration(host=server), "Authorization", f"Bearer {token}")
            )
        options.setdefault("namespaces", [NAMESPACE])
        # A thread with a loop of its own, as kopf.testing.KopfThread does: at exit kopf waits for
        # and cancels every task of its loop, and kmock's connections must not be among them.
        stop, ready = threading.Event(), threading.Event()
        failures: list[BaseException] = []

        def target() -> None:
            operator = run(
                kube=own_kube or kube, config=config, login=login, stop_flag=stop, ready_flag=ready, **options
            )
            try:
                asyncio.run(operator)
            except BaseException as exc:  # reported by the test
                failures.append(exc)

        thread = threading.Thread(
            target=target, name="operator" if token is None else f"operator-{token}", daemon=True
        )
        thread.start()
        try:
            assert await asyncio.to_thread(ready.wait, DEADLINE), "the operator did not start"
            yield
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, DEADLINE)
            if own_kube is not None:
                own_kube.close()
        assert not thread.is_alive(), "the operator did not stop"
        if failures:
            raise failures[0]

    return running
