"""Hostile packages through the real commands: a clean refusal (exit 2) naming the problem, nothing written."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from fpgaserve.cli.main import main
from tests.package.hostile import manifest_for, package, valid_members, write_zip

HUGE_INT = b"9" * 5000  # Python refuses to convert integers of more than 4300 digits
DEEP = b"[" * 100_000 + b"]" * 100_000


def storage_init(zip_path: Path, dest: Path) -> list[str]:
    digest = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    return ["storage-init", "--uri", zip_path.as_uri(), "--sha256", digest, "--dest", str(dest)]


def test_many_members_just_under_the_ratio_floor_are_a_zip_bomb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each member alone is below the 1 MiB floor of the per-member ratio check; together they
    # expand 1000:1 (40 MiB from about 40 KB).
    zeros = bytes((1 << 20) - 1)
    members = {**valid_members(), **{f"stages/02-classifier/pad/{i:04d}.bin": zeros for i in range(40)}}
    zip_path = package(tmp_path / "bomb.zip", members=members)
    assert zip_path.stat().st_size < 200_000
    dest = tmp_path / "models"
    assert main(storage_init(zip_path, dest)) == 2
    err = capsys.readouterr().err
    assert "over the whole archive (zip bomb?)" in err and "exceeds 100:1" in err
    assert not dest.exists() or list(dest.iterdir()) == []


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        (b'{"formatVersion": ' + HUGE_INT + b"}", "4300 digits"),
        (DEEP, "nested too deeply"),
        (b'{"formatVersion": 1, "name": ' + DEEP + b"}", "nested too deeply"),
    ],
    ids=["huge-integer", "deep-array", "deep-field"],
)
def test_a_pathological_manifest_is_refused_by_storage_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], manifest: bytes, problem: str
) -> None:
    members = valid_members()
    zip_path = write_zip(tmp_path / "p.zip", [("manifest.json", manifest), *members.items()])
    dest = tmp_path / "models"
    assert main(storage_init(zip_path, dest)) == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err
    assert not dest.exists() or list(dest.iterdir()) == []


@pytest.mark.parametrize(
    "manifest", [b'{"formatVersion": ' + HUGE_INT + b"}", DEEP], ids=["huge-integer", "deep"]
)
def test_a_pathological_manifest_is_refused_by_serve(tmp_path: Path, manifest: bytes) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "manifest.json").write_bytes(manifest)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fpgaserve.cli.main",
            "serve",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "package refused" in done.stderr and "Traceback" not in done.stderr


def test_a_valid_package_still_passes(tmp_path: Path) -> None:
    members = valid_members()
    zip_path = package(tmp_path / "ok.zip", members=members, manifest=manifest_for(members))
    assert main(storage_init(zip_path, tmp_path / "models")) == 0
