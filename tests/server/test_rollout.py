"""A rollout under load drops nothing: a Deployment-like restart of real server processes (HTTPS, keys).

The test plays the cluster's part: an "endpoints" thread probes each server's /readyz the way the
kubelet and the endpoints controller do and keeps the list of ready servers; clients pick a server
from that list for every request (a new connection each, as kube-proxy balances connections). The
new server comes up, the old one gets SIGTERM, and every request sent meanwhile must succeed: the
old server keeps accepting while it is unready (``drain_s``), so requests sent before the
endpoints list catches up are still answered.
"""

from __future__ import annotations

import itertools
import json
import ssl
import threading
import urllib.request
from pathlib import Path

from fpgaserve.server.testing import encode_png, sample_image
from tests.server.helpers import SecretMount, ServerProcess, http_get, keys_json, self_signed_cert
from tests.support.polling import wait_until

KEY = "rollout-key-0123456789"
PROBE_PERIOD_S = 0.2  # how often "the endpoints controller" re-reads readiness


class Endpoints:
    """The ready servers, as the endpoints controller would list them."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.known: list[str] = []
        self.ready: list[str] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def add(self, url: str) -> None:
        with self.lock:
            self.known.append(url)

    def _is_ready(self, url: str) -> bool:
        try:
            return http_get(f"{url}/readyz", context=self.context)[0] == 200
        except OSError:
            return False

    def _watch(self) -> None:
        while not self.done.wait(PROBE_PERIOD_S):
            with self.lock:
                known = list(self.known)
            ready = [url for url in known if self._is_ready(url)]
            with self.lock:
                self.ready = ready


def test_a_rolling_restart_under_load_fails_no_request(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    keys = SecretMount(tmp_path / "keys", {"keys.json": keys_json(KEY)})
    settings = {
        "host": "127.0.0.1",
        "port": 0,
        "tls_cert": str(cert),
        "tls_key": str(key),
        "keys_file": str(keys.root / "keys.json"),
        # Longer than a probe period (plus the probe itself on a loaded machine): the lists catch up.
        "drain_s": 2.0,
        "shutdown_timeout_s": 10,
    }
    context = ssl.create_default_context(cafile=str(cert))
    image = encode_png(sample_image())
    endpoints = Endpoints(context)
    results: list[tuple[str, int | str]] = []
    stop_load = threading.Event()
    turn = itertools.count()

    def client() -> None:
        while not stop_load.is_set():
            with endpoints.lock:
                ready = list(endpoints.ready)
            if not ready:
                continue
            url = ready[next(turn) % len(ready)]
            request = urllib.request.Request(
                f"{url}/score",
                data=image,
                headers={"Content-Type": "image/png", "Authorization": f"Bearer {KEY}"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=30, context=context) as response:
                    outcome: int | str = response.status
                    json.loads(response.read())
            except urllib.error.HTTPError as exc:
                outcome = exc.code
            except OSError as exc:  # connection refused or reset: what a rollout must not cause
                outcome = f"{type(exc).__name__}: {exc}"
            results.append((url, outcome))

    old = ServerProcess.fake(settings=settings, runtime={"batch_cost_s": 0.01})
    new: ServerProcess | None = None
    clients = [threading.Thread(target=client) for _ in range(4)]
    try:
        endpoints.add(old.url)
        wait_until(lambda: endpoints.ready == [old.url], what="the old server in the endpoints")
        for thread in clients:
            thread.start()
        wait_until(lambda: len(results) >= 20, what="load on the old server")

        new = ServerProcess.fake(settings=settings, runtime={"batch_cost_s": 0.01})
        endpoints.add(new.url)
        wait_until(lambda: new is not None and new.url in endpoints.ready, what="the new server ready")
        served_before = len(results)
        status = old.stop()  # SIGTERM, then wait for the process to end
        assert status == 0, old.log
        wait_until(lambda: len(results) >= served_before + 40, what="load on the new server")
    finally:
        stop_load.set()
        for thread in clients:
            if thread.is_alive():
                thread.join(timeout=60)
        endpoints.done.set()
        old.stop()
        if new is not None:
            assert new.stop() == 0, new.log

    failed = [r for r in results if r[1] != 200]
    assert failed == [], f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    # Both servers served, and the old one answered requests after its SIGTERM (while draining).
    assert {url for url, _ in results} == {old.url, new.url}
    assert "still serving for 2 s" in old.log and "stopped" in old.log
    assert KEY not in old.log + new.log
