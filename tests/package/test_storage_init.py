"""fpgaserve storage-init: file://, pvc://, http:// and s3:// (a local fake) into a verified directory."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from fpgaserve.api.errors import UserError
from fpgaserve.api.sigv4 import Credentials, sign
from fpgaserve.cli.main import main
from fpgaserve.cli.storage_init import MARKER_FILE, storage_init
from fpgaserve.package.fetch import FetchOptions, fetch, redact
from tests.package.hostile import package

ACCESS_KEY = "AKIDFPGASERVETEST"
SECRET_KEY = "s3cr3t-never-in-logs"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Server:
    """A local HTTP server: ``routes[path]`` is a list of (status, body) answered in turn."""

    def __init__(self) -> None:
        self.routes: dict[str, list[tuple[int, bytes]]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.s3_secret: str | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if server.s3_secret is not None and not server.s3_authorized(self):
                    body = (
                        b"<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>" + ACCESS_KEY.encode()
                        + b"</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256...</StringToSign></Error>"
                    )  # fmt: skip
                    return self.answer(403, body)
                answers = server.routes.get(
                    self.path.split("?")[0], [(404, b"<Error><Code>NoSuchKey</Code></Error>")]
                )
                status, body = answers.pop(0) if len(answers) > 1 else answers[0]
                self.answer(status, body)

            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def s3_authorized(self, request: BaseHTTPRequestHandler) -> bool:
        """Recompute the SigV4 signature the way S3 does, from what arrived."""
        assert self.s3_secret is not None
        authorization = request.headers.get("Authorization", "")
        if f"Credential={ACCESS_KEY}/" not in authorization:
            return False
        signed_names = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
        headers = {n: request.headers[n] for n in signed_names if n not in ("host", "x-amz-date")}
        when = datetime.strptime(request.headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        expected = sign(
            method="GET", host=request.headers["Host"], path=unquote(request.path), headers=headers,
            credentials=Credentials(ACCESS_KEY, self.s3_secret), region="us-east-1", now=when,
        )  # fmt: skip
        return expected.headers["authorization"] == authorization


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    return package(tmp_path / "service_def.zip")


def s3_credentials(tmp_path: Path, secret: str = SECRET_KEY) -> Path:
    directory = tmp_path / "credentials"
    directory.mkdir()
    (directory / "AWS_ACCESS_KEY_ID").write_text(ACCESS_KEY + "\n")
    (directory / "AWS_SECRET_ACCESS_KEY").write_text(secret)
    return directory


def test_file_uri_unpacks_a_verified_package(tmp_path: Path, pkg: Path) -> None:
    dest = tmp_path / "models"
    summary = storage_init(uri=pkg.as_uri(), sha256=digest(pkg), dest=dest)
    assert summary["fetched"] is True and summary["name"] == "tiny"
    assert summary["pipeline"] == [
        {"name": "preprocess", "kind": "tensorflow"},
        {"name": "fpga", "kind": "fpga"},
        {"name": "classifier", "kind": "keras"},
    ]
    assert sorted(p.name for p in dest.iterdir()) == [MARKER_FILE, "labels.txt", "manifest.json", "stages"]
    # A restarted init container finds the package in place and does not fetch it again.
    pkg.unlink()
    again = storage_init(uri=pkg.as_uri(), sha256=str(summary["sha256"]), dest=dest)
    assert again["fetched"] is False


def test_digest_mismatch_leaves_dest_empty(tmp_path: Path, pkg: Path) -> None:
    dest = tmp_path / "models"
    with pytest.raises(UserError, match="sha256 mismatch"):
        storage_init(uri=pkg.as_uri(), sha256="0" * 64, dest=dest)
    assert list(dest.iterdir()) == []


def test_hostile_package_is_refused_before_extraction(tmp_path: Path) -> None:
    hostile = package(tmp_path / "evil.zip", extra=[("../../etc/evil", b"x")])
    dest = tmp_path / "models"
    with pytest.raises(UserError, match=r"refused: member '\.\./\.\./etc/evil': path traversal"):
        storage_init(uri=hostile.as_uri(), sha256=digest(hostile), dest=dest)
    assert list(dest.iterdir()) == []


def test_non_empty_dest_is_refused(tmp_path: Path, pkg: Path) -> None:
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "something").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        storage_init(uri=pkg.as_uri(), sha256=digest(pkg), dest=dest)


def test_pvc_uri_reads_from_the_mounted_claim(tmp_path: Path, pkg: Path) -> None:
    root = tmp_path / "claim"
    (root / "models").mkdir(parents=True)
    pkg.rename(root / "models" / "service_def.zip")
    uri = "pvc://my-claim/models/service_def.zip"
    summary = storage_init(
        uri=uri, sha256=digest(root / "models" / "service_def.zip"), dest=tmp_path / "d", pvc_root=root
    )
    assert summary["fetched"] is True
    with pytest.raises(UserError, match="inside the claim"):
        storage_init(
            uri="pvc://my-claim/../../etc/passwd", sha256="0" * 64, dest=tmp_path / "e", pvc_root=root
        )


def test_http_download_with_retry(tmp_path: Path, pkg: Path, server: Server) -> None:
    server.routes["/pkgs/service_def.zip"] = [(503, b"busy"), (200, pkg.read_bytes())]
    out = tmp_path / "download.zip"
    size = fetch(
        f"{server.url}/pkgs/service_def.zip",
        out,
        sha256=digest(pkg),
        options=FetchOptions(sleep=lambda s: None),
    )
    assert size == pkg.stat().st_size and digest(out) == digest(pkg)
    assert len(server.requests) == 2


def test_http_errors_are_clear_and_secret_free(
    tmp_path: Path, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    uri = f"http://user:{SECRET_KEY}@127.0.0.1:{server.url.rsplit(':', 1)[1]}/missing.zip?sig={SECRET_KEY}"
    with pytest.raises(UserError, match="HTTP 404") as info:
        storage_init(uri=uri, sha256="a" * 64, dest=tmp_path / "d")
    assert SECRET_KEY not in str(info.value) and SECRET_KEY not in caplog.text
    assert server.requests[0][1]["authorization"].startswith("Basic ")  # sent, never shown


def test_s3_through_a_custom_endpoint(tmp_path: Path, pkg: Path, server: Server) -> None:
    server.s3_secret = SECRET_KEY
    server.routes["/models/team%20a/service_def.zip"] = [(200, pkg.read_bytes())]
    summary = storage_init(
        uri="s3://models/team a/service_def.zip", sha256=digest(pkg), dest=tmp_path / "d",
        credentials_dir=s3_credentials(tmp_path), endpoint=server.url,
    )  # fmt: skip
    assert summary["fetched"] is True
    path, headers = server.requests[0]
    assert path == "/models/team%20a/service_def.zip"  # path style, encoded once
    assert headers["x-amz-content-sha256"] == hashlib.sha256(b"").hexdigest()


def test_s3_wrong_secret_never_leaks(
    tmp_path: Path,
    pkg: Path,
    server: Server,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    server.s3_secret = "the-real-secret"
    credentials = s3_credentials(tmp_path, secret=SECRET_KEY)
    argv = ["storage-init", "--uri", "s3://models/service_def.zip", "--sha256", digest(pkg)]
    argv += ["--dest", str(tmp_path / "d"), "--credentials-dir", str(credentials), "--endpoint", server.url]
    termination_log = tmp_path / "termination-log"
    argv += ["--termination-log", str(termination_log)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "HTTP 403 Forbidden (SignatureDoesNotMatch)" in err
    # The kubelet's termination message (what the operator reports): one line, the same error.
    message = termination_log.read_text()
    assert message.count("\n") == 1 and "HTTP 403 Forbidden (SignatureDoesNotMatch)" in message
    for text in (err, caplog.text, message):
        assert SECRET_KEY not in text and "StringToSign" not in text and ACCESS_KEY not in text


def test_termination_log_names_a_digest_mismatch(tmp_path: Path, pkg: Path) -> None:
    termination_log = tmp_path / "termination-log"
    argv = ["storage-init", "--uri", f"{pkg.as_uri()}?X-Amz-Signature=presigned", "--sha256", "0" * 64]
    argv += ["--dest", str(tmp_path / "d"), "--termination-log", str(termination_log)]
    assert main(argv) == 2
    message = termination_log.read_text()
    assert "sha256 mismatch: expected " + "0" * 64 in message and "presigned" not in message
    assert main([*argv[:4], digest(pkg), *argv[5:]]) == 0  # a success leaves no new message
    assert termination_log.read_text() == message


def test_cli_prints_a_json_summary(tmp_path: Path, pkg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["storage-init", "--uri", pkg.as_uri(), "--sha256", digest(pkg), "--dest", str(tmp_path / "d")]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["deviceMemoryBytes"] == 1234 and summary["version"] == "1"


def test_option_and_uri_errors(tmp_path: Path, pkg: Path) -> None:
    with pytest.raises(UserError, match="--endpoint applies to s3:// URIs only"):
        storage_init(uri=pkg.as_uri(), sha256=digest(pkg), dest=tmp_path / "d", endpoint="http://x")
    with pytest.raises(UserError, match="unsupported scheme"):
        storage_init(uri="ftp://host/p.zip", sha256=digest(pkg), dest=tmp_path / "d")
    with pytest.raises(UserError, match="64 lower-case hex"):
        storage_init(uri=pkg.as_uri(), sha256="xyz", dest=tmp_path / "d")


def test_redact_drops_user_info_and_query() -> None:
    assert (
        redact("https://u:p@host:8443/a/b.zip?X-Amz-Signature=abc") == "https://host:8443/a/b.zip?<redacted>"
    )
