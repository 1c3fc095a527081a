"""``fpgaserve serve``: the operator's exact argv parses, user errors are one line, and it serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fpgaserve.api.serving import serve_argv
from fpgaserve.cli.main import build_parser, main
from fpgaserve.cli.serve import settings_from_args
from fpgaserve.server.settings import ServerSettings
from tests.server.helpers import ServerProcess, http_get
from tests.support.polling import wait_until


def test_the_operators_argv_parses_into_settings() -> None:
    argv = serve_argv(
        port=8443,
        grpc_port=8081,
        tls=True,
        keys=True,
        max_batch_size=16,
        max_batch_delay_ms=2.5,
        max_queue=128,
        max_body_bytes=16_777_216,
        max_image_pixels=1_000_000,
        request_timeout_s=60,
        header_timeout_s=3,
        max_connections=50,
        drain_s=2,
        shutdown_timeout_s=7,
    )
    settings = settings_from_args(build_parser().parse_args(argv))
    assert settings == ServerSettings(
        host="0.0.0.0",
        port=8443,
        grpc_port=8081,
        tls_cert=Path("/var/run/fpgaserve/tls/tls.crt"),
        tls_key=Path("/var/run/fpgaserve/tls/tls.key"),
        keys_file=Path("/var/run/fpgaserve/keys/keys.json"),
        max_batch_size=16,
        max_batch_delay_ms=2.5,
        max_queue=128,
        max_body_bytes=16_777_216,
        max_image_pixels=1_000_000,
        request_timeout_s=60.0,
        header_timeout_s=3.0,
        max_connections=50,
        drain_s=2.0,
        shutdown_timeout_s=7.0,
    )


def test_defaults_are_the_servers() -> None:
    assert settings_from_args(build_parser().parse_args(serve_argv(port=8080))) == ServerSettings(port=8080)


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--tls-cert", "c.pem"], "go together"), (["--max-batch-size", "0"], "at least 1")],
)
def test_bad_options_are_user_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["serve", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_package_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(tmp_path / "service_def.zip")]) == 2
    assert "no such package" in capsys.readouterr().err


# The real command in a real process, the fake runtime injected where the package would load.
_FAKE_PIPELINE = """
import logging, sys
logging.basicConfig(level=logging.INFO)  # as main() does: the test reads the listening line
from fpgaserve.cli.main import build_parser
from fpgaserve.cli.serve import run_serve
from fpgaserve.server.testing import FakeRuntime
sys.exit(run_serve(build_parser().parse_args(sys.argv[1:]), load=lambda d: FakeRuntime(name=d.name)))
"""


def test_fpgaserve_serve_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    model_dir = tmp_path / "mymodel"
    model_dir.mkdir()
    argv = [sys.executable, "-c", _FAKE_PIPELINE, *serve_argv(model_dir=str(model_dir), port=0)]
    argv[argv.index("0.0.0.0")] = "127.0.0.1"
    with ServerProcess(argv=argv) as server:
        wait_until(lambda: http_get(f"{server.url}/readyz")[0] == 200, what="ready")
        assert b'"model": "mymodel"' in http_get(f"{server.url}/readyz")[1]
        assert server.stop() == 0, server.log


def test_help_lists_every_flag_the_operator_generates() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fpgaserve.cli.main", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # Every option the operator can generate, with every switch on and every limit set.
    argv = serve_argv(port=1, tls=True, keys=True, max_batch_size=1, max_batch_delay_ms=1, max_queue=1,
                      max_body_bytes=1, max_image_pixels=1, request_timeout_s=1, header_timeout_s=1,
                      max_connections=1, drain_s=1, shutdown_timeout_s=1)  # fmt: skip
    flags = [arg for arg in argv if arg.startswith("--")]
    assert len(flags) >= 10
    for flag in flags:
        assert flag in out


def test_the_load_says_when_kernels_are_being_compiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A first start compiles kernels in its warm-up: a minute of silence before ready otherwise.
    # (When numba speaks, and only then, is tests/npu/test_kernel_cache.py's.)
    import fpgaserve.npu.precompile
    import fpgaserve.runtime.numba_typing
    import fpgaserve.runtime.pipeline
    from fpgaserve.cli import serve

    loaded, announcers = object(), []
    monkeypatch.setattr(fpgaserve.npu.precompile, "announce_compiling", announcers.append)
    monkeypatch.setattr(fpgaserve.runtime.numba_typing, "load_numba_typing", lambda: None)
    monkeypatch.setattr(fpgaserve.runtime.pipeline, "load_pipeline", lambda *a, **k: loaded)
    assert serve._load_pipeline(tmp_path, max_image_pixels=10) is loaded
    assert len(announcers) == 1  # before the pipeline's first kernel
    with caplog.at_level("INFO", logger="fpgaserve.cli.serve"):
        announcers[0]("compiling the emulator's kernels")
    assert [r.getMessage() for r in caplog.records] == ["compiling the emulator's kernels"]
