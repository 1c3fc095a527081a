"""Reading a package's manifest from its first bytes, over HTTP, and into an FpgaModel's status."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from fpgaserve.api.kinds import SECRET
from fpgaserve.api.manifest import ManifestError
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.kube import Kube
from fpgaserve.operator.packages import HEAD_BYTES, PackageUnreachable, manifest_from_head, read_package_info
from fpgaserve.operator.reconcile_model import reconcile_model
from tests.operator.cluster import Cluster
from tests.operator.helpers import NAMESPACE, create, model_body

PROGRAM = b"\x01program" * 100
SAVED_MODEL = b"saved model bytes"


def manifest() -> dict[str, Any]:
    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    tensor = {"name": "features", "dtype": "float32", "shape": [1280]}
    return {
        "formatVersion": 1,
        "name": "effnet",
        "pipeline": [
            {"kind": "fpga", "name": "featurizer", "path": "featurizer.fpga",
             "input": {"name": "image", "dtype": "float32", "shape": [224, 224, 3]}, "output": tensor,
             "format": {"name": "msfp16", "blockSize": 16, "exponentBits": 8, "mantissaBits": 7},
             "weightBytes": 4_000_000, "programSha256": sha(PROGRAM), "programVersion": 1},
            {"kind": "keras", "name": "classifier", "path": "classifier", "input": tensor,
             "output": {"name": "probs", "dtype": "float32", "shape": [1000]}},
        ],
        "members": [
            {"path": "featurizer.fpga", "sha256": sha(PROGRAM), "size": len(PROGRAM)},
            {"path": "classifier/saved_model.pb", "sha256": sha(SAVED_MODEL), "size": len(SAVED_MODEL)},
        ],
    }  # fmt: skip


def package(
    *, first: str = "manifest.json", compression: int = zipfile.ZIP_DEFLATED, padding: int = 0
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        members = {"manifest.json": json.dumps(manifest()).encode(), "featurizer.fpga": PROGRAM,
                   "classifier/saved_model.pb": SAVED_MODEL, "padding.bin": b"\0" * padding}  # fmt: skip
        for name in [first, *[n for n in members if n != first]]:
            archive.writestr(name, members[name])
    return buffer.getvalue()


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_manifest_from_head(compression: int) -> None:
    data = package(compression=compression)
    assert json.loads(manifest_from_head(data[:4096])) == manifest()


def test_not_a_package() -> None:
    with pytest.raises(ManifestError, match="not a zip"):
        manifest_from_head(b"<html>" + b" " * 100)
    with pytest.raises(ManifestError, match=r"first member is not manifest\.json"):
        manifest_from_head(package(first="featurizer.fpga"))
    with pytest.raises(ManifestError, match="larger than"):
        manifest_from_head(package()[:60])


Serve = Callable[[bytes, bool], Awaitable[str]]


@pytest.fixture
async def serve() -> Any:
    servers: list[TestServer] = []
    seen: list[dict[str, str]] = []

    async def start(body: bytes, ranges: bool = True) -> str:
        async def handler(request: web.Request) -> web.Response:
            seen.append(dict(request.headers))
            if request.path != "/pkg.zip":
                return web.Response(status=404)
            if ranges and request.headers.get("Range", "").startswith("bytes=0-"):
                end = min(int(request.headers["Range"].split("-")[1]), len(body) - 1)
                headers = {"Content-Range": f"bytes 0-{end}/{len(body)}"}
                return web.Response(status=206, body=body[: end + 1], headers=headers)
            return web.Response(body=body)

        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/pkg.zip"))

    start.seen = seen  # type: ignore[attr-defined]
    yield start
    for server in servers:
        await server.close()


@pytest.mark.parametrize("ranges", [True, False], ids=["ranged", "whole"])
async def test_read_package_info(serve: Any, ranges: bool) -> None:
    body = package(padding=2 * HEAD_BYTES)  # bigger than what the operator reads
    info = await read_package_info(await serve(body, ranges), token="s3cret")
    assert info.manifest.name == "effnet" and info.manifest.device_memory_bytes == 4_000_000
    assert info.size_bytes == len(body)
    assert serve.seen[-1]["Authorization"] == "Bearer s3cret"


async def test_unreachable_never_names_the_url(serve: Any) -> None:
    url = await serve(package())
    with pytest.raises(PackageUnreachable) as info:
        await read_package_info(url.replace("pkg.zip", "missing.zip?X-Amz-Signature=secret"))
    assert "404" in str(info.value) and "secret" not in str(info.value)
    with pytest.raises(PackageUnreachable):
        await read_package_info("http://127.0.0.1:9/pkg.zip", timeout=2)


async def test_model_status_shows_the_pipeline(serve: Any, cluster: Cluster, kube: Kube) -> None:
    url = await serve(package())
    body = await create(
        cluster, model_body(source={"uri": url, "sha256": "b" * 64, "secretRef": {"name": "web-token"}})
    )
    await kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-token", "namespace": NAMESPACE},
                       "data": {"token": "dG9rZW4="}})  # fmt: skip
    outcome = await reconcile_model(kube=kube, config=OperatorConfig(), body=body)
    assert outcome.error is None and outcome.status["phase"] == "Ready"
    assert outcome.status["pipeline"] == [
        {"name": "featurizer", "kind": "fpga", "deviceMemoryBytes": 4_000_000},
        {"name": "classifier", "kind": "keras"},
    ]
    assert outcome.status["deviceMemoryBytes"] == 4_000_000 and outcome.status["sizeBytes"] == len(package())
    read = {c["type"]: c for c in outcome.status["conditions"]}["ManifestRead"]
    assert read["status"] == "True" and "featurizer (fpga) -> classifier (keras)" in read["message"]
    assert serve.seen[-1]["Authorization"] == "Bearer token"
    # Read once per digest: the next cycle does not fetch again.
    requests = len(serve.seen)
    again = await reconcile_model(kube=kube, config=OperatorConfig(), body={**body, "status": outcome.status})
    assert again.status == {} and len(serve.seen) == requests
    assert await kube.get(SECRET, NAMESPACE, "web-token") is not None


async def test_invalid_manifest_holds_the_model(serve: Any, cluster: Cluster, kube: Kube) -> None:
    url = await serve(b"PK\x03\x04 definitely not a real zip entry" + b"\0" * 64)
    body = await create(cluster, model_body(source={"uri": url, "sha256": "c" * 64}))
    outcome = await reconcile_model(kube=kube, config=OperatorConfig(), body=body)
    assert outcome.error is not None and outcome.error.reason == "InvalidManifest"
    assert outcome.status["phase"] == "Pending"


async def test_unreachable_source_does_not_hold_the_model(cluster: Cluster, kube: Kube) -> None:
    body = await create(cluster, model_body(source={"uri": "http://127.0.0.1:9/pkg.zip", "sha256": "d" * 64}))
    outcome = await reconcile_model(kube=kube, config=OperatorConfig(), body=body)
    assert outcome.error is None and outcome.status["phase"] == "Ready"
    read = {c["type"]: c for c in outcome.status["conditions"]}["ManifestRead"]
    assert (read["status"], read["reason"]) == ("Unknown", "Unreachable")


ACCESS_KEY, SECRET_KEY = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


async def start_fake_s3(body: bytes) -> tuple[TestServer, list[str]]:
    """An S3-compatible endpoint serving /models/pkg.zip that recomputes each SigV4 signature."""
    from datetime import datetime, timezone
    from urllib.parse import unquote

    from fpgaserve.api.sigv4 import Credentials, sign

    verdicts: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";") if authorization else []
        headers = {n: request.headers[n] for n in signed if n not in ("host", "x-amz-date")}
        when = datetime.strptime(request.headers.get("x-amz-date", "19700101T000000Z"), "%Y%m%dT%H%M%SZ")
        expected = sign(method="GET", host=request.host, path=unquote(request.path), headers=headers,
                        credentials=Credentials(ACCESS_KEY, SECRET_KEY), region="us-east-1",
                        now=when.replace(tzinfo=timezone.utc))  # fmt: skip
        if expected.headers["authorization"] != authorization:
            verdicts.append("forbidden")
            return web.Response(status=403, text="<Error><Code>SignatureDoesNotMatch</Code></Error>")
        verdicts.append("ok")
        end = min(int(request.headers["Range"].split("-")[1]), len(body) - 1)
        return web.Response(
            status=206, body=body[: end + 1], headers={"Content-Range": f"bytes 0-{end}/{len(body)}"}
        )

    app = web.Application()
    app.router.add_get("/models/pkg.zip", handler)
    server = TestServer(app)
    await server.start_server()
    return server, verdicts


@pytest.mark.parametrize("secret_key", [SECRET_KEY, "wrong-secret"], ids=["signed", "bad-signature"])
async def test_s3_manifest_read_through_a_custom_endpoint(
    cluster: Cluster, kube: Kube, secret_key: str
) -> None:
    server, verdicts = await start_fake_s3(package())
    try:
        endpoint = str(server.make_url("")).rstrip("/")
        source = {
            "uri": "s3://models/pkg.zip",
            "sha256": "d" * 64,
            "endpoint": endpoint,
            "secretRef": {"name": "s3"},
        }
        body = await create(cluster, model_body(source=source))
        data = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": secret_key}
        await kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3", "namespace": NAMESPACE},
                           "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})  # fmt: skip
        outcome = await reconcile_model(kube=kube, config=OperatorConfig(), body=body)
    finally:
        await server.close()
    read = {c["type"]: c for c in outcome.status["conditions"]}["ManifestRead"]
    if secret_key == SECRET_KEY:
        assert verdicts == ["ok"] and read["status"] == "True"
        assert outcome.status["deviceMemoryBytes"] == 4_000_000
    else:
        assert verdicts == ["forbidden"] and read["status"] == "Unknown" and "403" in read["message"]
        assert secret_key not in json.dumps(outcome.status)
