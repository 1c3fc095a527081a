"""TLS: a server context from PEM files, TLS 1.2 at least, clear errors for unusable files."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from fpgaserve.inference.tls import TlsConfigError, build_ssl_context
from tests.inference.helpers import self_signed_cert


def test_a_self_signed_pair_loads_and_old_protocols_are_off(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    context = build_ssl_context(cert_file=cert, key_file=key)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.protocol == ssl.PROTOCOL_TLS_SERVER


def test_missing_or_mismatched_files_are_named(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    with pytest.raises(TlsConfigError, match="does not exist"):
        build_ssl_context(cert_file=tmp_path / "nope.crt", key_file=key)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = self_signed_cert(other)
    with pytest.raises(TlsConfigError, match="must match the certificate"):
        build_ssl_context(cert_file=cert, key_file=other_key)
    key.write_text("not a key")
    with pytest.raises(TlsConfigError, match=str(key)):
        build_ssl_context(cert_file=cert, key_file=key)
