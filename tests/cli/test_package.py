"""`fpgaserve package`: a zoo pipeline built into a service package without writing Python."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fpgaserve.cli.main import main


def fpgaserve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "fpgaserve.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_package_writes_what_serve_reads_and_a_second_build_reuses_the_program(tmp_path: Path) -> None:
    from fpgaserve.package.reader import verify_package

    out = tmp_path / "service_def.zip"
    models = tmp_path / "models"
    done = fpgaserve("package", "efficientnet-lite0", "-o", str(out), "--model-path", str(models), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["path"] == str(out) and report["format"] == "int12-bfp"
    assert report["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    manifest = verify_package(out)
    assert [s.kind for s in manifest.pipeline] == ["tensorflow", "fpga", "keras"]
    assert manifest.labels is not None
    assert list(tmp_path.glob(".*partial")) == []
    assert list(models.rglob("*.fpga")), "the program is cached for the next build"

    # Again over it, without --json: progress on stderr, the result and the next step on stdout.
    again = fpgaserve(
        "package", "efficientnet-lite0", "-o", str(out), "--overwrite", "--model-path", str(models)
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "... building efficientnet-lite0" in again.stderr and "... writing" in again.stderr
    assert f"loaded compiled efficientnet-lite0 from {models}" in again.stderr  # not compiled again
    assert f"sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}" in again.stdout
    assert f"fpgaserve serve {out}" in again.stdout


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["-o", "{tmp}/there.zip"], "already exists; pass --overwrite"),
        (["-o", "{tmp}/no/such/dir/p.zip"], "does not exist"),
        (["-o", "{tmp}"], "is a directory"),
        (["--weights", "{tmp}/missing.h5", "-o", "{tmp}/p.zip"], "does not exist"),
        (["--format", "fp99", "-o", "{tmp}/p.zip"], "fp99"),
    ],
)
def test_package_refuses_bad_input_in_one_line_before_building(
    argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "there.zip").write_bytes(b"keep me")
    code = main(["package", "efficientnet-lite0", *(a.format(tmp=tmp_path) for a in argv)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("fpgaserve package: error: ") and says in err and err.count("\n") == 1, err
    assert (tmp_path / "there.zip").read_bytes() == b"keep me"
    assert not (tmp_path / "p.zip").exists()


def test_package_names_the_zoo_models(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["package", "mobilenet"])
    assert done.value.code == 2
    assert "efficientnet-lite0" in capsys.readouterr().err
