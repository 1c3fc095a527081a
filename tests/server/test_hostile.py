"""Hostile clients against a real server process (HTTPS, keys): issue 9's defects stay fixed.

Raw TLS sockets send what no HTTP library would (bytes that are not UTF-8, control characters,
oversized headers, headers that never finish); every answer is a JSON 4xx/503 and no key reaches
the log or a response body.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.helpers import SecretMount, ServerProcess, http_get, keys_json, self_signed_cert
from tests.support.polling import wait_until

KEY = "hostile-test-key-0123456789"


def png_header_only(width: int, height: int, *, bit_depth: int = 8, color: int = 2) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with one row of data (as small as a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


class Served:
    """A running server and how to talk to it."""

    def __init__(self, server: ServerProcess, context: ssl.SSLContext, keys: SecretMount) -> None:
        self.server, self.context, self.keys = server, context, keys
        host, port = server.url.removeprefix("https://").rsplit(":", 1)
        self.host, self.port = host, int(port)

    def connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection((self.host, self.port), timeout=30)
        return self.context.wrap_socket(raw, server_hostname=self.host)

    def exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send raw bytes on a fresh connection; the status, headers and body of the answer."""
        with self.connect() as sock:
            sock.sendall(request)
            return read_response(sock)

    def post(self, path: str, body: bytes, *, content_type: str = "application/json") -> tuple[int, Any]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        status, _, payload = self.exchange(head.encode() + body)
        return status, json.loads(payload)


def read_response(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def closed_by_server(sock: ssl.SSLSocket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


def start(tmp: Path, tls_files: tuple[Path, Path], **settings: Any) -> Iterator[Served]:
    cert, key = tls_files
    keys = SecretMount(tmp / "keys", {"keys.json": keys_json(KEY)})
    all_settings = {
        "host": "127.0.0.1",
        "port": 0,
        "tls_cert": str(cert),
        "tls_key": str(key),
        "keys_file": str(keys.root / "keys.json"),
        "keys_check_interval_s": 0,
        **settings,
    }
    with ServerProcess.fake(settings=all_settings) as server:
        context = ssl.create_default_context(cafile=str(cert))
        served = Served(server, context, keys)
        wait_until(lambda: http_get(f"{server.url}/readyz", context=context)[0] == 200, what="ready")
        yield served
        assert server.stop() == 0, server.log
    assert KEY not in server.log, "a key reached the log"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path]) -> Iterator[Served]:
    yield from start(
        tmp_path_factory.mktemp("served"),
        tls_files,
        max_image_pixels=250_000,
        header_timeout_s=0.5,
        max_connections=8,
    )


# -- images -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "bits"),
    [(30000, 30000, 8), (9000, 9000, 8), (13000, 13000, 1), (501, 500, 8)],
    ids=["pillow-bomb", "81-megapixels", "1-bit-169-megapixels", "just-over-the-limit"],
)
def test_an_image_over_the_pixel_limit_is_a_400_naming_the_limit_on_every_face(
    served: Served, width: int, height: int, bits: int
) -> None:
    image = png_header_only(width, height, bit_depth=bits, color=0 if bits == 1 else 2)
    encoded = base64.b64encode(image).decode()
    answers = [
        served.post("/score", image, content_type="image/png"),
        served.post("/score", json.dumps({"images": [encoded]}).encode()),
        served.post(
            "/v2/models/fake/infer",
            json.dumps(
                {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [encoded]}]}
            ).encode(),
        ),
        served.post("/v1/models/fake:predict", json.dumps({"instances": [{"b64": encoded}]}).encode()),
    ]
    for status, body in answers:
        assert status == 400, body
        assert "exceeds the limit of 250000 pixels" in body["error"] and "--max-image-pixels" in body["error"]
    assert "Traceback" not in served.server.log


def test_an_image_within_the_limit_is_served(served: Served) -> None:
    from fpgaserve.server.testing import encode_png, sample_image

    status, body = served.post("/score", encode_png(sample_image(side=500)), content_type="image/png")
    assert status == 200 and len(body["results"]) == 1


# -- headers and keys -------------------------------------------------------------------------------


def test_a_non_utf8_authorization_is_a_401(served: Served) -> None:
    status, headers, body = served.exchange(
        b"GET /v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\xc3(\r\nConnection: close\r\n\r\n"
    )
    assert status == 401, body
    assert headers["www-authenticate"].startswith("Bearer")
    assert "invalid key" in json.loads(body)["error"]


@pytest.mark.parametrize(
    "header",
    [
        f"Authorization: Bearer {KEY}\x01".encode(),  # a control byte
        f"Authorization: Bearer {KEY}".encode() + b"x" * 9000,  # over aiohttp's 8190-byte limit
        f"X-Api-Key: {KEY}\x00".encode(),
    ],
    ids=["control-byte", "oversized", "nul"],
)
def test_a_malformed_header_is_a_json_400_that_echoes_no_key(served: Served, header: bytes) -> None:
    status, headers, body = served.exchange(b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n")
    assert status in (400, 431)
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"].startswith("malformed request: ")
    assert KEY.encode() not in body
    # The log line is written before the answer: it is there now, without the key (checked at the
    # end of the module too, for every test).
    assert KEY not in served.server.proc_log_so_far()


def test_malformed_requests_log_one_warning_per_kind_and_no_traceback(served: Served) -> None:
    bad_chunk = (
        f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: image/png\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n"
    ).encode()
    for _ in range(10):
        status, _, _ = served.exchange(b"GET /v2 HTTP/1.1\r\nHost: x\r\nBad\x01Header: 1\r\n\r\n")
        assert status == 400
        status, _, body = served.exchange(bad_chunk)
        assert status == 400 and json.loads(body)["error"].startswith(
            ("malformed request", "the request body")
        )
        status, _, _ = served.exchange(b"NOT-HTTP\r\n\r\n")
        assert status == 400
    log = served.server.proc_log_so_far()
    assert "Traceback" not in log and "ERROR" not in log
    warnings = [
        line for line in log.splitlines() if line.startswith("WARNING") and "malformed request" in line
    ]
    assert len(warnings) == len({line.split("(")[1].split(")")[0] for line in warnings}) <= 3


def test_an_emptied_or_deleted_keys_file_revokes_every_key(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    for served in start(tmp_path, tls_files):
        url = served.server.url
        auth = {"Authorization": f"Bearer {KEY}"}
        assert http_get(f"{url}/v2", context=served.context, headers=auth)[0] == 200
        served.keys.update({"keys.json": ""})
        status, body = http_get(f"{url}/v2", context=served.context, headers=auth)
        assert status == 503 and "no valid key" in json.loads(body)["error"]
        served.keys.update({"keys.json": keys_json("fresh-key")})
        assert (
            http_get(f"{url}/v2", context=served.context, headers={"Authorization": "Bearer fresh-key"})[0]
            == 200
        )
        assert http_get(f"{url}/v2", context=served.context, headers=auth)[0] == 401
        (served.keys.root / "keys.json").unlink()
        status, _ = http_get(
            f"{url}/v2", context=served.context, headers={"Authorization": "Bearer fresh-key"}
        )
        assert status == 503
        # The probes do not need a key: the pod stays alive and its state is visible.
        assert http_get(f"{url}/healthz", context=served.context)[0] == 200


# -- slow and many connections ----------------------------------------------------------------------


def test_a_connection_that_never_finishes_its_headers_is_closed(served: Served) -> None:
    with served.connect() as trickling, served.connect() as silent:
        trickling.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\n")
        trickling.settimeout(30)
        silent.settimeout(30)
        assert closed_by_server(trickling)  # blocks until the server closes it (or 30 s: failure)
        assert closed_by_server(silent)


def test_an_idle_keep_alive_connection_outlives_the_header_timeout(served: Served) -> None:
    request = f"GET /v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode()
    with served.connect() as sock:
        sock.sendall(request)
        assert read_response(sock)[0] == 200
        # Idle (no bytes) for three header timeouts: idle is not slow, the connection stays usable.
        sock.settimeout(1.5)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        sock.settimeout(30)
        sock.sendall(request)
        assert read_response(sock)[0] == 200


def test_connections_over_the_cap_get_503_and_are_closed(served: Served) -> None:
    held = [served.connect() for _ in range(8)]
    try:
        # A first request on each makes sure the server has taken all eight.
        for sock in held:
            sock.sendall(f"GET /v2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
            assert read_response(sock)[0] == 200
        with served.connect() as extra:
            status, headers, body = read_response(extra)
            assert status == 503 and headers["retry-after"] == "1"
            assert "--max-connections" in json.loads(body)["error"]
            assert closed_by_server(extra)
    finally:
        for sock in held:
            sock.close()
    wait_until(
        lambda: served.exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 200
    )


# -- routes -----------------------------------------------------------------------------------------


def test_a_get_on_a_predict_path_is_405_not_a_status_answer(served: Served) -> None:
    status, headers, body = served.exchange(
        f"GET /v1/models/fake/versions/1:predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    assert status == 405, body
    assert headers["allow"] == "POST"


def _accepts(document: dict[str, Any], schema_name: str, body: Any) -> bool:
    import jsonschema

    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    return jsonschema.Draft7Validator(schema).is_valid(body)


def test_the_api_document_refuses_what_the_server_refuses(served: Served) -> None:
    status, body = http_get(f"{served.server.url}/openapi.json", context=served.context)
    assert status == 200
    document = json.loads(body)
    image = base64.b64encode(png_header_only(8, 8)).decode()
    # TF Serving: neither or both of instances/inputs, and empty inputs, are refused by both.
    for refused in ({}, {"instances": [{"b64": image}], "inputs": [{"b64": image}]}, {"inputs": {}}):
        assert not _accepts(document, "PredictRequest", refused), refused
        assert served.post("/v1/models/fake:predict", json.dumps(refused).encode())[0] == 400
    assert _accepts(document, "PredictRequest", {"instances": [{"b64": image}]})
    # OIP v2: the served model takes BYTES; FP32 is refused by the document and by the server.
    fp32 = {"inputs": [{"name": "image", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 0.5]}]}
    assert not _accepts(document, "InferenceRequest", fp32)
    assert served.post("/v2/models/fake/infer", json.dumps(fp32).encode())[0] == 400
    # /score: an image model takes images; an object without them is refused by both.
    assert not _accepts(document, "ScoreRequest", {})
    assert served.post("/score", b"{}")[0] == 400
