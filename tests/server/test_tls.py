"""TLS: a server context from PEM files, TLS 1.2 at least, clear errors for unusable files, and
certificate rotation (checked with real handshakes over memory BIOs)."""

from __future__ import annotations

import contextlib
import logging
import ssl
from pathlib import Path

import pytest

from fpgaserve.server.tls import CertificateReloader, TlsConfigError, build_ssl_context
from tests.server.helpers import SecretMount, self_signed_cert


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


def _client_accepts(server: ssl.SSLContext, ca: Path) -> bool:
    """Whether a client that trusts only ``ca`` completes a handshake with ``server``."""
    client_context = ssl.create_default_context(cafile=str(ca))
    client_context.check_hostname = False
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(c_in, c_out)
    peer = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(8):
        try:
            client.do_handshake()
            return True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLCertVerificationError:
            return False
        s_in.write(c_out.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            peer.do_handshake()
        c_in.write(s_out.read())
    raise AssertionError("the handshake did not finish")


def test_a_rotated_secret_is_loaded_and_a_broken_one_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pairs = {}
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
        pairs[name] = self_signed_cert(tmp_path / name)
    (old_cert, old_key), (new_cert, new_key) = pairs["old"], pairs["new"]
    mount = SecretMount(tmp_path / "tls", {"tls.crt": old_cert.read_text(), "tls.key": old_key.read_text()})
    cert_file, key_file = mount.root / "tls.crt", mount.root / "tls.key"
    context = build_ssl_context(cert_file=cert_file, key_file=key_file)
    reloader = CertificateReloader(context, cert_file=cert_file, key_file=key_file)
    assert reloader.reload_if_changed() is False  # nothing changed
    assert _client_accepts(context, old_cert) and not _client_accepts(context, new_cert)

    # A pair that does not match (half an update) is refused; the old certificate keeps serving.
    mount.update({"tls.crt": new_cert.read_text(), "tls.key": old_key.read_text()})
    with caplog.at_level(logging.WARNING, logger="fpgaserve.server.tls"):
        assert reloader.reload_if_changed() is False
    assert "keeping the previous certificate" in caplog.text and str(cert_file) in caplog.text
    assert "PRIVATE KEY" not in caplog.text
    assert _client_accepts(context, old_cert) and not _client_accepts(context, new_cert)
    assert reloader.reload_if_changed() is False  # reported once per change

    mount.update({"tls.crt": new_cert.read_text(), "tls.key": new_key.read_text()})
    assert reloader.reload_if_changed() is True
    assert _client_accepts(context, new_cert) and not _client_accepts(context, old_cert)
