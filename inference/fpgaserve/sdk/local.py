"""``LocalWebservice``: deploy a service definition on this machine, no cluster needed.

Role: the local twin of an ``FpgaWebservice``. ``deploy`` starts a real ``fpgaserve serve``
process on a free loopback port with generated keys and, by default, a self-signed certificate
(HTTPS), waits until ``/readyz`` says the model is loaded and warm, and then ``run`` scores images
over real HTTP(S). ``delete`` stops the process and removes its keys, certificate and logs.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from fpgaserve.api.serving import KEYS_PRIMARY, KEYS_SECONDARY, READINESS_PATH
from fpgaserve.sdk.client import score

__all__ = ["DeploymentError", "LocalWebservice"]

logger = logging.getLogger(__name__)


class DeploymentError(RuntimeError):
    """The local service did not come up (the message carries the end of its log)."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalWebservice:
    """A package served by a local ``fpgaserve serve`` process (HTTPS and key auth by default)."""

    def __init__(
        self,
        package: str | os.PathLike[str],
        *,
        name: str = "local",
        host: str = "127.0.0.1",
        port: int | None = None,
        tls: bool = True,
        auth: bool = True,
        max_batch_size: int = 8,
        grpc: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.package = Path(package)
        if not self.package.exists():
            raise FileNotFoundError(f"{self.package}: no such service definition")
        self.name = name
        self.host = host
        self.port = port or _free_port(host)
        self.tls = tls
        self.auth = auth
        self.max_batch_size = max_batch_size
        # The gRPC port (OIP v2 gRPC, TF Serving Predict), beside the HTTP one, when asked for.
        self.grpc_port = _free_port(host) if grpc else None
        self._env = {**os.environ, **(extra_env or {})}
        self._dir = Path(tempfile.mkdtemp(prefix=f"fpgaserve-{name}-"))
        self._keys = (secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def deploy(
        cls,
        package: str | os.PathLike[str],
        *,
        timeout: float = 600.0,
        progress: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> LocalWebservice:
        """Start serving ``package`` and wait until it is ready; ``progress``, if given, gets each line
        the server logs meanwhile (a first start says there that it compiles the kernels)."""
        service = cls(package, **kwargs)
        service.start()
        service.wait_for_deployment(timeout=timeout, progress=progress)
        return service

    @property
    def scoring_uri(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/score"

    @property
    def cert_file(self) -> Path | None:
        return self._dir / "tls.crt" if self.tls else None

    @property
    def log_file(self) -> Path:
        return self._dir / "server.log"

    def start(self) -> None:
        argv = [sys.executable, "-m", "fpgaserve.cli.main", "serve", str(self.package),
                "--host", self.host, "--port", str(self.port), "--max-batch-size", str(self.max_batch_size)]  # fmt: skip
        if self.grpc_port is not None:
            argv += ["--grpc-port", str(self.grpc_port)]
        if self.auth:
            keys = self._dir / "keys.json"
            keys.write_text(json.dumps({KEYS_PRIMARY: self._keys[0], KEYS_SECONDARY: self._keys[1]}))
            keys.chmod(0o600)
            argv += ["--keys-file", str(keys)]
        if self.tls:
            from fpgaserve.api.certs import self_signed_certificate

            cert, key = self_signed_certificate([self.host, "localhost"])
            (self._dir / "tls.crt").write_bytes(cert)
            (self._dir / "tls.key").write_bytes(key)
            (self._dir / "tls.key").chmod(0o600)
            argv += ["--tls-cert", str(self._dir / "tls.crt"), "--tls-key", str(self._dir / "tls.key")]
        log = self.log_file.open("wb")
        self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self._env)
        log.close()
        logger.info("started %s (pid %d) on port %d", self.name, self._process.pid, self.port)

    def wait_for_deployment(
        self,
        show_output: bool = False,
        *,
        timeout: float = 600.0,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        """Poll ``/readyz`` until the model is loaded and warmed up, or fail with the server's log;
        ``progress`` gets each line the server logs meanwhile."""
        deadline = time.monotonic() + timeout
        context = ssl.create_default_context(cafile=str(self.cert_file)) if self.tls else None
        url = f"{'https' if self.tls else 'http'}://{self.host}:{self.port}{READINESS_PATH}"
        read = 0
        while time.monotonic() < deadline:
            if progress is not None:
                read = self._follow_log(read, progress)
            if self._process is None or self._process.poll() is not None:
                raise DeploymentError(f"the server exited before it was ready:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=5, context=context) as response:
                    if response.status == 200:
                        if show_output:
                            print(f"{self.name}: ready at {self.scoring_uri}")
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or listening but not ready (503)
            time.sleep(0.2)
        raise DeploymentError(f"not ready after {timeout:.0f} s:\n{self._log_tail()}")

    def delete(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its keys, certificate and log."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LocalWebservice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    # -- use -------------------------------------------------------------------------------------

    def get_keys(self) -> tuple[str, str]:
        """The primary and secondary keys (``Authorization: Bearer <key>``)."""
        return self._keys

    def run(self, input_data: bytes | str | Path | IO[Any], *, grpc: bool = False) -> list[float]:
        """Score one image; returns its class probabilities (index = class id), as the notebook expects.

        With ``grpc`` (a service deployed with ``grpc=True``) the call goes to the gRPC port, through
        TF Serving's ``Predict`` as Brainwave's ``PredictionClient`` made it.
        """
        if not grpc:
            return list(self.score(input_data)["results"][0]["probabilities"])
        if self.grpc_port is None:
            raise ValueError("this service has no gRPC port: deploy it with grpc=True")
        from fpgaserve.sdk.grpc_client import PredictionClient

        roots = self.cert_file.read_bytes() if self.cert_file is not None else None
        key = self._keys[0] if self.auth else None
        with PredictionClient(
            self.host, self.grpc_port, use_ssl=self.tls, access_token=key, root_certificates=roots
        ) as client:
            return [float(p) for p in client.score_image(input_data)]

    def score(self, input_data: bytes | str | Path | IO[Any]) -> dict[str, Any]:
        """Score one image; returns the whole ``/score`` answer (probabilities, top-5, device time)."""
        key = self._keys[0] if self.auth else None
        return score(self.scoring_uri, input_data, key=key, cafile=self.cert_file)

    def _follow_log(self, offset: int, each: Callable[[str], None]) -> int:
        """Pass the log's whole lines after byte ``offset`` to ``each``; the offset after them."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return offset
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
        for line in data[:end].decode(errors="replace").splitlines():
            each(line)
        return offset + end

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
