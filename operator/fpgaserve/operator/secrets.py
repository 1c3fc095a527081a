"""The keys Secret and the self-signed TLS Secret of an FpgaWebservice.

Role: builders for ``fpgaserve.operator.reconcile_webservice``. Unlike the other builders these make secrets
(random keys, a private key), so they are created once and then left alone: the reconciler only
creates them when absent, replaces one key on request (``regenerated``), and re-issues the
certificate when the names it must cover change. Nothing here logs, and no error message carries a
key or a certificate.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from cryptography import x509

from fpgaserve.api.certs import CERT_VALIDITY, self_signed_certificate
from fpgaserve.api.naming import (
    KEYS_FILENAME,
    TLS_SECRET_CERT,
    TLS_SECRET_KEY,
    keys_secret_name,
    object_meta,
    tls_secret_name,
)
from fpgaserve.api.serving import KEYS_PRIMARY, KEYS_SECONDARY

__all__ = [
    "TLS_HOSTS_ANNOTATION",
    "KeySlot",
    "build_keys_secret",
    "build_tls_secret",
    "generate_key",
    "keys_complete",
    "regenerated",
    "tls_hosts",
    "tls_secret_current",
]

KeySlot = Literal["primary", "secondary"]
TLS_HOSTS_ANNOTATION = "fpgaserve.io/tls-hosts"
RENEW_BEFORE = datetime.timedelta(days=30)
_SLOTS: dict[str, str] = {"primary": KEYS_PRIMARY, "secondary": KEYS_SECONDARY}


def generate_key() -> str:
    """A new random key (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def _keys_data(keys: Mapping[str, str]) -> dict[str, str]:
    text = json.dumps({KEYS_PRIMARY: keys[KEYS_PRIMARY], KEYS_SECONDARY: keys[KEYS_SECONDARY]})
    return {KEYS_FILENAME: base64.b64encode(text.encode()).decode()}


def build_keys_secret(*, owner: Mapping[str, Any]) -> dict[str, Any]:
    """A keys Secret with two fresh keys, as the server's keys file (``keys.json``)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(owner=owner, name=keys_secret_name(owner["metadata"]["name"])),
        "type": "Opaque",
        "data": _keys_data({KEYS_PRIMARY: generate_key(), KEYS_SECONDARY: generate_key()}),
    }


def _read_keys(secret: Mapping[str, Any]) -> dict[str, str] | None:
    encoded = (secret.get("data") or {}).get(KEYS_FILENAME)
    try:
        keys = json.loads(base64.b64decode(encoded, validate=True)) if encoded else None
    except ValueError:  # bad base64 or bad JSON: treated as missing, and replaced
        return None
    if not isinstance(keys, dict) or not all(
        isinstance(keys.get(k), str) and keys[k] for k in _SLOTS.values()
    ):
        return None
    return {k: keys[k] for k in _SLOTS.values()}


def keys_complete(secret: Mapping[str, Any]) -> bool:
    """Whether the Secret holds a readable keys file with both keys."""
    return _read_keys(secret) is not None


def regenerated(secret: Mapping[str, Any], slot: KeySlot) -> dict[str, str]:
    """The Secret's new ``data`` with the key in ``slot`` replaced (both, when unreadable)."""
    keys = _read_keys(secret) or {KEYS_PRIMARY: generate_key(), KEYS_SECONDARY: generate_key()}
    keys[_SLOTS[slot]] = generate_key()
    return _keys_data(keys)


def tls_hosts(*, name: str, namespace: str, cluster_domain: str, ingress_host: str | None) -> list[str]:
    """The DNS names the server's certificate covers: the Service's names and the ingress host."""
    hosts = [
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.{cluster_domain}",
    ]
    if ingress_host is not None and ingress_host not in hosts:
        hosts.append(ingress_host)
    return hosts


def build_tls_secret(
    *, owner: Mapping[str, Any], hosts: Sequence[str], now: datetime.datetime | None = None
) -> dict[str, Any]:
    """A kubernetes.io/tls Secret with a new self-signed certificate (ECDSA P-256) for ``hosts``."""
    cert_pem, key_pem = self_signed_certificate(hosts, now=now, validity=CERT_VALIDITY)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(
            owner=owner,
            name=tls_secret_name(owner["metadata"]["name"]),
            annotations={TLS_HOSTS_ANNOTATION: ",".join(hosts)},
        ),
        "type": "kubernetes.io/tls",
        "data": {
            TLS_SECRET_CERT: base64.b64encode(cert_pem).decode(),
            TLS_SECRET_KEY: base64.b64encode(key_pem).decode(),
        },
    }


def tls_secret_current(secret: Mapping[str, Any], *, hosts: Sequence[str], now: datetime.datetime) -> bool:
    """Whether a generated TLS Secret covers ``hosts`` and stays valid for RENEW_BEFORE more."""
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    if annotations.get(TLS_HOSTS_ANNOTATION) != ",".join(hosts):
        return False
    data = secret.get("data") or {}
    try:
        cert = x509.load_pem_x509_certificate(
            base64.b64decode(data.get(TLS_SECRET_CERT) or "", validate=True)
        )
    except ValueError:
        return False
    return data.get(TLS_SECRET_KEY) is not None and cert.not_valid_after_utc > now + RENEW_BEFORE
