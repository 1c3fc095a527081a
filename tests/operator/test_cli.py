"""``fpgaserve operator``: options, the manifest, and a real run as a process against kmock."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from fpgaserve.cli.main import build_parser, main
from fpgaserve.operator import cli
from fpgaserve.operator.config import DEFAULT_IMAGE
from fpgaserve.operator.install_objects import DEFAULT_NAMESPACE
from tests.operator.cluster import Cluster
from tests.operator.helpers import NAMESPACE, assert_valid, create, model_body, webservice_body
from tests.support.net import free_port
from tests.support.polling import eventually


def test_parser_defaults_agree_with_the_library() -> None:
    assert cli.DEFAULT_NAMESPACE == DEFAULT_NAMESPACE
    args = build_parser().parse_args(["operator", "-n", "a", "-n", "b"])
    assert args.namespace == ["a", "b"] and not args.all_namespaces and args.image == DEFAULT_IMAGE


def test_namespaces_are_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operator"]) == 2
    assert "--namespace NS (repeatable) or --all-namespaces" in capsys.readouterr().err


def test_scope_options_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "-n", "a", "--all-namespaces"])


def test_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--watch-namespace", "team-a", "--image", "reg/fpgaserve:9", "--operator-image", "reg/op:9"]
    assert main(["operator", "manifest", *argv]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    for obj in objects:
        assert_valid(obj)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "reg/op:9" and "--namespace=team-a" in container["args"]
    assert "--image=reg/fpgaserve:9" in container["args"]


def kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
        "current-context": "kmock",
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def test_runs_as_a_process(cluster: Cluster, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig(tmp_path / "config", str(cluster.url).rstrip("/")))}
    env.pop("KUBERNETES_SERVICE_HOST", None)  # never in-cluster here
    # The operator Deployment's own command (install_objects and the chart), not the console script.
    command = [sys.executable, "-m", "fpgaserve.operator", "--namespace", NAMESPACE,
               "--liveness", f"http://127.0.0.1:{port}/healthz", "--resync-seconds", "1"]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        await create(cluster, model_body())
        await create(cluster, webservice_body())
        await eventually(lambda: cluster.live("apps/v1/deployments", NAMESPACE, "web"), what="a Deployment")

        async def live() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/healthz") as r,
                ):
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(live, what="the liveness endpoint")
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()[-2000:]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # The process authenticated with the kubeconfig's token, through kopf and through its own client.
    agents = {
        r.headers.get("User-Agent", "").split("/")[0] for r in cluster if r.headers.get("Authorization")
    }
    assert {"kopf", "OpenAPI-Generator"} <= agents
