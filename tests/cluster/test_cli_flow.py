"""One end-to-end flow of ``fpgaserve model`` and ``fpgaserve service`` on the emulated cluster,
every answer read as JSON: register, create --wait, list, get-keys, run, regen-key, a refused
model delete, delete."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import skimage.data

from fpgaserve.api.serving import KEYS_PRIMARY, KEYS_SECONDARY
from fpgaserve.sdk.cluster.store import PackageStore, package_key
from tests.cluster.conftest import Kubelet
from tests.operator.cluster import Cluster
from tests.operator.conftest import StartOperator
from tests.operator.helpers import NAMESPACE
from tests.runtime.tiny import LABELS, encode, tiny_classifier, tiny_definition, tiny_featurizer


async def fpgaserve(kubelet: Kubelet, cwd: Path, *args: str, expect: int = 0) -> tuple[Any, str]:
    """Run the CLI as a user would (from the workspace directory); its JSON answer and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fpgaserve.cli.main", *args, cwd=cwd, env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await kubelet.guard(process.communicate(), timeout=600)
    assert process.returncode == expect, (args, out.decode()[-2000:], err.decode()[-3000:])
    return (json.loads(out) if expect == 0 and out.strip() else None), err.decode()


@pytest.mark.slow
async def test_cli_flow_with_json_output(
    workspace_dir: Path,
    cluster: Cluster,
    start_operator: StartOperator,
    kubelet: Kubelet,
    s3_store: PackageStore,
) -> None:
    package = tiny_definition(tiny_featurizer(), tiny_classifier()).save(workspace_dir / "tiny.zip")
    photo = workspace_dir / "cat.jpg"
    photo.write_bytes(encode(skimage.data.chelsea(), "jpeg"))
    connect = ("--connect", f"127.0.0.1:{kubelet.host_port}")
    cwd = workspace_dir
    async with start_operator():
        model, _ = await fpgaserve(kubelet, cwd, "model", "register", str(package.path), "--name", "tiny",
                                   "--tag", "team=vision", "-o", "json")  # fmt: skip
        assert (model["name"], model["state"], model["sha256"]) == ("tiny", "Ready", package.sha256)
        assert model["tags"] == {"team": "vision"}
        assert s3_store.exists(package_key(package.sha256))

        created, progress = await fpgaserve(
            kubelet, cwd, "service", "create", "web", "--model", "tiny", "--wait", "-o", "json"
        )
        assert created["state"] == "Ready" and created["error"] is None, created
        assert "web: Ready at " in progress  # the progress display, on stderr
        listed, _ = await fpgaserve(kubelet, cwd, "service", "list", "--model", "tiny", "-o", "json")
        assert [s["name"] for s in listed] == ["web"]

        keys, _ = await fpgaserve(kubelet, cwd, "service", "get-keys", "web", "-o", "json")
        secret = cluster.live("v1/secrets", NAMESPACE, "web-keys")
        assert secret is not None
        stored = json.loads(base64.b64decode(secret["data"]["keys.json"]))
        assert keys == {"primaryKey": stored[KEYS_PRIMARY], "secondaryKey": stored[KEYS_SECONDARY]}

        answer, _ = await fpgaserve(kubelet, cwd, "service", "run", "web", str(photo), *connect, "-o", "json")
        assert answer["results"][0]["top5"][0]["label"] in LABELS and answer["deviceSeconds"] > 0

        await fpgaserve(kubelet, cwd, "service", "regen-key", "web", "--key", "Secondary", "-o", "json")
        after, _ = await fpgaserve(kubelet, cwd, "service", "get-keys", "web", "-o", "json")
        assert after["primaryKey"] == keys["primaryKey"] and after["secondaryKey"] != keys["secondaryKey"]

        _, refused = await fpgaserve(kubelet, cwd, "model", "delete", "tiny", expect=2)
        assert "used by web service(s) web; delete them first" in refused

        gone, _ = await fpgaserve(kubelet, cwd, "service", "delete", "web", "-o", "json")
        assert gone == {"name": "web", "deleted": True}
        await fpgaserve(kubelet, cwd, "model", "delete", "tiny", "-o", "json")
        remaining, _ = await fpgaserve(kubelet, cwd, "model", "list", "-o", "json")
        assert remaining == []
