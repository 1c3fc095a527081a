"""Fixtures for the operator tests: kmock's emulator, a Kube wrapper on it, and the real operator.

``cluster`` is kmock's Kubernetes emulator on a local port (see ``tests/operator/cluster.py``);
``start_operator`` runs the real kopf operator (in a thread) with a fresh registry, short
resync and retry intervals, and stops it at the end of the test (or earlier, for restarts);
several can run at once (peering), each with API clients of its own and a bearer ``token``
(default ``operator``). Every request an operator sends is recorded for the RBAC check
(``tests/operator/rbac.py``, ``test_rbac.py``) when the test's ``cluster`` is torn down.
Example objects and polling helpers are in ``tests/operator/helpers.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import kmock
import kopf
import pytest
from kubernetes.client import ApiClient, Configuration

from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.kube import Kube
from fpgaserve.operator.runner import run
from tests.operator.cluster import Cluster, declare_resources
from tests.operator.helpers import NAMESPACE, sent_by
from tests.operator.rbac import RbacLog, api_call
from tests.support.polling import DEADLINE

RBAC_LOG = pytest.StashKey[RbacLog]()
# The test that checks the log (test_rbac.py) runs after every other test of the session.
RBAC_SUMMARY = "test_every_granted_verb_is_used"
# The installs the operators of one test ran as: token -> (watched namespaces or None, peering).
Operators = dict[str, tuple[Sequence[str] | None, bool]]


def rbac_log(config: pytest.Config) -> RbacLog:
    return config.stash.setdefault(RBAC_LOG, RbacLog())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    summary = [item for item in items if item.name == RBAC_SUMMARY]
    for item in summary:
        items.remove(item)
        items.append(item)
    log = rbac_log(config)
    log.tests_expected = {i.nodeid for i in items if "start_operator" in getattr(i, "fixturenames", ())}


def pytest_deselected(items: Sequence[pytest.Item]) -> None:
    for item in items:
        if "start_operator" in getattr(item, "fixturenames", ()):
            rbac_log(item.config).tests_missing.add(item.nodeid)


@pytest.fixture
def operators() -> Operators:
    return {}


@pytest.fixture
async def cluster(request: pytest.FixtureRequest, operators: Operators) -> AsyncIterator[Cluster]:
    async with Cluster() as emulator, kmock.Server(emulator):
        declare_resources(emulator)
        yield emulator
        if operators:
            log = rbac_log(request.config)
            log.tests_recorded.add(request.node.nodeid)
            for sent in emulator:
                token, call = sent_by(sent), api_call(sent)
                if token in operators and call is not None:
                    namespaces, peering = operators[token]
                    log.add(call, namespaces=namespaces, peering=peering, test=request.node.nodeid)


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

    Keywords go to ``runner.run`` (``namespaces`` defaults to ``[NAMESPACE]``). Each instance's
    kopf and ``Kube`` clients are its own and send ``token`` (default ``operator``) as a bearer
    token, so that the request log tells instances apart, and from the test's own requests
    (``helpers.sent_by``, ``helpers.writes_to(by=...)``)."""

    def __call__(
        self, *, token: str | None = None, **options: Any
    ) -> contextlib.AbstractAsyncContextManager[None]: ...


@pytest.fixture
def start_operator(cluster: Cluster, config: OperatorConfig, operators: Operators) -> StartOperator:
    server = str(cluster.url).rstrip("/")

    @contextlib.asynccontextmanager
    async def running(*, token: str | None = None, **options: Any) -> AsyncIterator[None]:
        token = token or "operator"  # the request log tells the operator's requests from the test's

        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server, token=token)

        own_kube = Kube(api_client=ApiClient(Configuration(host=server), "Authorization", f"Bearer {token}"))
        options.setdefault("namespaces", [NAMESPACE])
        watched = None if options.get("clusterwide") else list(options["namespaces"])
        operators[token] = (watched, options.get("peering_name") is not None)
        # A thread with a loop of its own, as kopf.testing.KopfThread does: at exit kopf waits for
        # and cancels every task of its loop, and kmock's connections must not be among them.
        stop, ready = threading.Event(), threading.Event()
        failures: list[BaseException] = []

        def target() -> None:
            operator = run(
                kube=own_kube, config=config, login=login, stop_flag=stop, ready_flag=ready, **options
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
            own_kube.close()
        assert not thread.is_alive(), "the operator did not stop"
        if failures:
            raise failures[0]

    return running
