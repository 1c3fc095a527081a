"""The server as a real process: HTTPS with a self-signed certificate, keys, drain on SIGTERM."""

from __future__ import annotations

import json
import ssl
import threading
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import pytest

from fpgaserve.server.testing import encode_png, sample_image
from tests.server.helpers import SecretMount, ServerProcess, http_get, keys_json, self_signed_cert
from tests.support.polling import wait_until

KEY = "e2e-key-0123456789"


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path)


def _client_context(cert: Path, *, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    if maximum is not None:
        with warnings.catch_warnings():  # setting an old version is deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            context.maximum_version = maximum
    return context


def _score(url: str, image: bytes, *, context: ssl.SSLContext, key: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{url}/score",
        data=image,
        headers={"Content-Type": "image/png", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_https_with_keys_then_a_graceful_drain(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    keys = SecretMount(tmp_path / "keys", {"keys.json": keys_json(KEY)})
    settings = {
        "host": "127.0.0.1",
        "port": 0,
        "tls_cert": str(cert),
        "tls_key": str(key),
        "keys_file": str(keys.root / "keys.json"),
        "keys_check_interval_s": 0,
        "shutdown_timeout_s": 10,
    }
    with ServerProcess.fake(settings=settings, runtime={"batch_cost_s": 1.0}) as server:
        assert server.url.startswith("https://127.0.0.1:")
        context = _client_context(cert)
        wait_until(lambda: http_get(f"{server.url}/readyz", context=context)[0] == 200, what="ready")
        image = encode_png(sample_image())
        assert _score(server.url, image, context=context, key="wrong")[0] == 401
        # TLS 1.2 is enough; 1.1 and older are refused at the handshake.
        tls12 = _client_context(cert, maximum=ssl.TLSVersion.TLSv1_2)
        assert http_get(f"{server.url}/healthz", context=tls12)[0] == 200
        with pytest.raises((ssl.SSLError, urllib.error.URLError)):
            http_get(f"{server.url}/healthz", context=_client_context(cert, maximum=ssl.TLSVersion.TLSv1_1))

        # A request in flight when SIGTERM arrives still gets its answer; then the process exits 0.
        answers: list[tuple[int, Any]] = []
        slow = threading.Thread(
            target=lambda: answers.append(_score(server.url, image, context=context, key=KEY))
        )
        slow.start()
        wait_until(
            lambda: b"fpgaserve_inflight_inputs 1.0" in http_get(f"{server.url}/metrics", context=context)[1]
        )
        status = server.stop()
        slow.join(timeout=30)
    assert status == 0, server.log
    assert answers and answers[0][0] == 200 and len(answers[0][1]["results"]) == 1
    assert "draining in-flight requests" in server.log and "stopped" in server.log
    assert KEY not in server.log


def test_a_rotated_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    pairs = []
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        pairs.append(self_signed_cert(tmp_path / name))
    (old_cert, old_key), (new_cert, new_key) = pairs
    mount = SecretMount(tmp_path / "tls", {"tls.crt": old_cert.read_text(), "tls.key": old_key.read_text()})
    settings = {
        "host": "127.0.0.1",
        "port": 0,
        "tls_cert": str(mount.root / "tls.crt"),
        "tls_key": str(mount.root / "tls.key"),
        "tls_check_interval_s": 0.05,
    }
    with ServerProcess.fake(settings=settings) as server:
        trusts_old, trusts_new = _client_context(old_cert), _client_context(new_cert)
        wait_until(lambda: http_get(f"{server.url}/readyz", context=trusts_old)[0] == 200, what="ready")
        mount.update({"tls.crt": new_cert.read_text(), "tls.key": new_key.read_text()})

        def serves_new() -> bool:
            try:
                return http_get(f"{server.url}/healthz", context=trusts_new)[0] == 200
            except urllib.error.URLError:
                return False

        wait_until(serves_new, what="the new certificate")
        with pytest.raises(urllib.error.URLError):
            http_get(f"{server.url}/healthz", context=trusts_old)
        assert server.stop() == 0
    assert "TLS certificate" in server.log and "reloaded" in server.log


def test_plain_http_and_a_failed_load_exits_1() -> None:
    with ServerProcess.fake(
        settings={"host": "127.0.0.1", "port": 0}, load_error="no such package"
    ) as server:
        assert server.url.startswith("http://")
        status = server.proc.wait(timeout=30)
        server.stop()
    assert status == 1
    assert "RuntimeError: no such package" in server.log and "the model failed to load" in server.log
