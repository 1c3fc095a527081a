"""Test helpers: Kubernetes-style Secret mounts, self-signed certificates, a real server process."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from fpgaserve.server.batching import DynamicBatcher
from tests.support.polling import DEADLINE

# ``await make_client(runtime=..., **settings)`` (the conftest fixture): a client of a fresh app.
MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
# ``make_batcher(runtime, **settings)`` (the conftest fixture): a started batcher.
MakeBatcher = Callable[..., DynamicBatcher]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class SecretMount:
    """A directory laid out as the kubelet lays out a Secret volume, updated the way it updates it.

    ``keys.json -> ..data/keys.json`` and ``..data -> ..<timestamp>``; ``update`` writes a new
    timestamped directory and renames a new ``..data`` symlink over the old one (atomic), then
    deletes the old directory, like the kubelet's AtomicWriter.
    """

    def __init__(self, root: Path, files: dict[str, str]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._generation = 0
        self._current: Path | None = None
        self.update(files)
        for name in files:
            (root / name).symlink_to(Path("..data") / name)

    def update(self, files: dict[str, str]) -> None:
        self._generation += 1
        version = self.root / f"..2026_01_01_00_00_{self._generation:02d}.000000000"
        version.mkdir()
        for name, content in files.items():
            (version / name).write_text(content)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(version.name)
        os.rename(tmp, self.root / "..data")
        if self._current is not None:
            for child in self._current.iterdir():
                child.unlink()
            self._current.rmdir()
        self._current = version


def keys_json(primary: str, secondary: str | None = None) -> str:
    document = {"primaryKey": primary}
    if secondary is not None:
        document["secondaryKey"] = secondary
    return json.dumps(document)


def self_signed_cert(directory: Path, *, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (an IP SAN and the name localhost), as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fpgaserve-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(host))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


_LISTENING = re.compile(r"listening on (https?)://([^\s]+):(\d+)")


class ServerProcess:
    """A real server process (``python -c`` running ``server_main.run`` over a ``FakeRuntime``).

    ``url`` is known once the process logged its address; ``stop()`` sends SIGTERM and returns the
    exit status; ``log`` holds what it wrote to stderr.
    """

    def __init__(self, *, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.log = ""
        self.url = self._wait_for_address()
        # Keep reading stderr: a chatty server must not block on a full pipe, and tests look at
        # the log while it runs (``proc_log_so_far``).
        self._reader = threading.Thread(target=self._read_rest, daemon=True)
        self._reader.start()

    def _read_rest(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log += line

    def proc_log_so_far(self) -> str:
        return self.log

    @classmethod
    def fake(
        cls, *, settings: dict[str, Any], runtime: dict[str, Any] | None = None, load_error: str | None = None
    ) -> ServerProcess:
        """``server_main.run`` over ``FakeRuntime(**runtime)``, or a loader that raises ``load_error``."""
        settings = {"drain_s": 0, **settings}  # tests that drain say so
        source = f"FakeRuntime(**{runtime or {}!r})"
        if load_error is not None:
            source = f"lambda: (_ for _ in ()).throw(RuntimeError({load_error!r}))"
        code = (
            "import logging, sys\n"
            "from pathlib import Path\n"
            "from fpgaserve.server.server_main import run\n"
            "from fpgaserve.server.settings import ServerSettings\n"
            "from fpgaserve.server.testing import FakeRuntime\n"
            "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')\n"
            f"settings = {settings!r}\n"
            "for key in ('tls_cert', 'tls_key', 'keys_file'):\n"
            "    if settings.get(key): settings[key] = Path(settings[key])\n"
            f"sys.exit(run(runtime={source}, settings=ServerSettings(**settings), exit_process=True))\n"
        )
        return cls(argv=[sys.executable, "-c", code])

    def _wait_for_address(self) -> str:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log += line
            match = _LISTENING.search(line)
            if match:
                return f"{match.group(1)}://{match.group(2)}:{match.group(3)}"
        self.proc.kill()
        raise AssertionError(f"the server did not start:\n{self.log}{self.proc.stderr.read()}")

    def stop(self, *, timeout: float = DEADLINE) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=DEADLINE)  # the rest of the log, up to the process's end
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=DEADLINE)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def http_get(url: str, *, context: Any = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
