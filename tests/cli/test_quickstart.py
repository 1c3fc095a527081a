"""`fpgaserve quickstart`, end to end: real weights, a real package, a real HTTPS server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_quickstart_scores_chelsea_as_a_cat_and_cleans_up(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    argv = [
        sys.executable,
        "-m",
        "fpgaserve.cli.main",
        "quickstart",
        "--json",
        "--model-path",
        str(tmp_path / "m"),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert len(report["top"]) == 5
    assert "cat" in report["top"][0]["label"]
    assert report["scoringUri"].startswith("https://")
    assert report["deviceSeconds"] > 0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("fpgaserve-")]
    assert leftovers == []  # the package, keys, certificate and logs are gone
