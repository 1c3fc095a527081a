"""Self-signed TLS certificates: for the operator's generated TLS Secrets and local deployments.

Role: one place that knows how fpgaserve makes a certificate (ECDSA P-256, SAN = the hosts, server
auth only), used by ``fpgaserve.operator.secrets`` and ``fpgaserve.sdk.local``. Needs only
``cryptography``.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence

__all__ = ["CERT_VALIDITY", "self_signed_certificate"]

CERT_VALIDITY = datetime.timedelta(days=365)


def self_signed_certificate(
    hosts: Sequence[str],
    *,
    now: datetime.datetime | None = None,
    validity: datetime.timedelta = CERT_VALIDITY,
) -> tuple[bytes, bytes]:
    """A new key and a self-signed certificate for ``hosts`` (DNS names or IP addresses), as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise ValueError("a certificate needs at least one host name")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])])
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clock skew
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert_pem, key_pem
