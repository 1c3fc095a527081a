"""The kind end-to-end script, tests/e2e/kind_e2e.sh: the whole run where docker, kind, kubectl and
helm are there (skipped with the script's own reason elsewhere), and its skip paths everywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("kind_e2e.sh")
BASH = shutil.which("bash") or "/bin/bash"
TOOLS = ("docker", "kind", "kubectl", "helm")


def run_script(*args: str, path: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [BASH, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def fake_tools(directory: Path, *, docker_exit: int) -> Path:
    """Stand-ins for the four tools that log their calls; ``docker`` exits with ``docker_exit``."""
    calls = directory / "calls.log"
    for tool in TOOLS:
        script = directory / tool
        status = docker_exit if tool == "docker" else 0
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\nexit {status}\n')
        script.chmod(0o755)
    return calls


@pytest.mark.slow
def test_kind_end_to_end() -> None:
    verdict = run_script("--preflight").stdout.strip()
    if verdict.startswith("SKIP:"):
        pytest.skip(verdict.removeprefix("SKIP:").strip())
    assert verdict == "ok", verdict
    done = run_script(timeout=3600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "== PASS" in done.stdout


def test_skips_without_the_tools(tmp_path: Path) -> None:
    done = run_script(path=str(tmp_path))  # an empty directory: none of the tools, and no others
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "SKIP: docker, kind, kubectl, helm not found on PATH "
        "(the kind end-to-end run needs docker, kind, kubectl and helm)\n"
    )


def test_skips_when_the_docker_daemon_is_unreachable(tmp_path: Path) -> None:
    calls = fake_tools(tmp_path, docker_exit=1)
    done = run_script(path=f"{tmp_path}:/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("SKIP: the Docker daemon is unreachable")
    assert done.stdout.count("\n") == 1
    assert calls.read_text() == "docker info\n"  # nothing was created


def test_preflight_passes_with_the_tools_and_a_daemon(tmp_path: Path) -> None:
    calls = fake_tools(tmp_path, docker_exit=0)
    done = run_script("--preflight", path=f"{tmp_path}:/usr/bin:/bin")
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr
    assert calls.read_text() == "docker info\n"
