"""make_app: one app per call, the model's life in a cleanup context, fail-fast configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fpgaserve.server import ServerSettings, make_app
from fpgaserve.server.auth import KeyFileError
from fpgaserve.server.testing import FakeRuntime


async def test_the_runtime_is_closed_when_the_app_stops(aiohttp_client: Any, png: bytes) -> None:
    runtime = FakeRuntime()
    client = await aiohttp_client(make_app(runtime=runtime, settings=ServerSettings()))
    assert (await client.post("/score", data=png)).status == 200
    await client.close()
    assert runtime.closed


async def test_apps_share_nothing(aiohttp_client: Any) -> None:
    first = make_app(runtime=FakeRuntime(name="a"), settings=ServerSettings())
    second = make_app(runtime=FakeRuntime(name="b"), settings=ServerSettings())
    clients = [await aiohttp_client(app) for app in (first, second)]
    names = [(await (await c.get("/readyz")).json())["model"] for c in clients]
    assert names == ["a", "b"]


def test_a_missing_keys_file_fails_before_listening(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        make_app(runtime=FakeRuntime(), settings=ServerSettings(keys_file=tmp_path / "keys.json"))


def test_the_server_does_not_import_tensorflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import fpgaserve.server.server_main, fpgaserve.server.testing, fpgaserve.cli.serve\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'fpgaserve.runtime.pipeline') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
