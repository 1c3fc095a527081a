"""ServerSettings: defaults that serve, and combinations refused with a reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fpgaserve.api.serving import HTTP_PORT
from fpgaserve.server.settings import ServerSettings


def test_defaults_serve_plain_http_on_the_contract_port_without_auth() -> None:
    settings = ServerSettings()
    assert settings.port == HTTP_PORT and not settings.tls and settings.keys_file is None
    assert settings.max_batch_size >= 1 and settings.max_queue >= settings.max_batch_size


def test_tls_needs_both_files() -> None:
    assert ServerSettings(tls_cert=Path("c"), tls_key=Path("k")).tls
    with pytest.raises(ValueError, match="go together"):
        ServerSettings(tls_cert=Path("c"))


@pytest.mark.parametrize(
    "options",
    [
        {"port": 70000},
        {"max_batch_size": 0},
        {"max_batch_delay_ms": -1},
        {"max_queue": 0},
        {"max_body_bytes": 10},
        {"request_timeout_s": 0},
        {"shutdown_timeout_s": -1},
        {"idle_trim_s": -1},
    ],
)
def test_out_of_range_values_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ServerSettings(**options)


def test_the_grpc_port_is_off_by_default_and_needs_a_port_of_its_own() -> None:
    assert ServerSettings().grpc_port is None
    assert ServerSettings(port=0, grpc_port=0).grpc_port == 0  # both picked by the kernel
    with pytest.raises(ValueError, match="a port of its own"):
        ServerSettings(port=8080, grpc_port=8080)
    with pytest.raises(ValueError, match="out of range"):
        ServerSettings(grpc_port=70000)
