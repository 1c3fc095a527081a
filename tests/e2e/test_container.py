"""The container end-to-end script, tests/e2e/container_e2e.sh: the whole run where a Docker engine
is reachable or can be started (as root), skipped with the script's own reason elsewhere; and its
skip path everywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("container_e2e.sh")
BASH = shutil.which("bash") or "/bin/bash"


def run_script(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BASH, str(SCRIPT), *args],
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_roles_run_in_containers() -> None:
    verdict = run_script("--preflight").stdout.strip()
    if verdict.startswith("SKIP:"):
        pytest.skip(verdict.removeprefix("SKIP:").strip())
    assert verdict == "ok", verdict
    done = run_script(timeout=3600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "== PASS" in done.stdout
    assert "pod: scored chelsea over TLS" in done.stdout


def test_skips_without_an_engine_unless_allowed_to_start_one(tmp_path: Path) -> None:
    # A docker that cannot reach its daemon, and no leave to install or start one.
    docker = tmp_path / "docker"
    docker.write_text("#!/bin/sh\nexit 1\n")
    docker.chmod(0o755)
    done = run_script(env={"PATH": f"{tmp_path}:/usr/bin:/bin", "CI": "", "E2E_INSTALL": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("SKIP: no reachable Docker engine (`docker info` failed); E2E_INSTALL=1")
    assert done.stdout.count("\n") == 1
