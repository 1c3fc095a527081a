"""Keys and TLS Secrets: generated once, one key replaced on request, certificates that fit."""

from __future__ import annotations

import base64
import datetime
import json

from cryptography import x509

from fpgaserve.api.serving import KEYS_PRIMARY, KEYS_SECONDARY
from fpgaserve.operator.secrets import (
    TLS_HOSTS_ANNOTATION,
    build_keys_secret,
    build_tls_secret,
    keys_complete,
    regenerated,
    tls_hosts,
    tls_secret_current,
)
from tests.operator.helpers import assert_valid, owner, webservice_body

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def keys_of(data: dict[str, str]) -> dict[str, str]:
    parsed: dict[str, str] = json.loads(base64.b64decode(data["keys.json"]))
    return parsed


def test_keys_secret() -> None:
    secret = build_keys_secret(owner=owner(webservice_body()))
    assert_valid(secret)
    assert secret["metadata"]["name"] == "web-keys" and secret["type"] == "Opaque"
    keys = keys_of(secret["data"])
    assert set(keys) == {KEYS_PRIMARY, KEYS_SECONDARY}
    assert keys[KEYS_PRIMARY] != keys[KEYS_SECONDARY] and len(keys[KEYS_PRIMARY]) >= 40
    assert keys_complete(secret)
    other = build_keys_secret(owner=owner(webservice_body()))
    assert keys_of(other["data"]) != keys  # fresh randomness every time


def test_regenerate_one_key() -> None:
    secret = build_keys_secret(owner=owner(webservice_body()))
    before = keys_of(secret["data"])
    after = keys_of(regenerated(secret, "secondary"))
    assert after[KEYS_PRIMARY] == before[KEYS_PRIMARY]
    assert after[KEYS_SECONDARY] != before[KEYS_SECONDARY]
    again = keys_of(regenerated(secret, "primary"))
    assert again[KEYS_PRIMARY] != before[KEYS_PRIMARY] and again[KEYS_SECONDARY] == before[KEYS_SECONDARY]


def test_unreadable_keys_are_replaced() -> None:
    broken = {"data": {"keys.json": base64.b64encode(b"{not json").decode()}}
    assert not keys_complete(broken) and not keys_complete({"data": {}})
    assert set(keys_of(regenerated(broken, "primary"))) == {KEYS_PRIMARY, KEYS_SECONDARY}


def test_tls_secret() -> None:
    hosts = tls_hosts(
        name="web", namespace="ns1", cluster_domain="cluster.local", ingress_host="web.example.com"
    )
    assert hosts == ["web", "web.ns1", "web.ns1.svc", "web.ns1.svc.cluster.local", "web.example.com"]
    secret = build_tls_secret(owner=owner(webservice_body()), hosts=hosts, now=NOW)
    assert_valid(secret)
    assert secret["type"] == "kubernetes.io/tls" and secret["metadata"]["name"] == "web-tls"
    assert secret["metadata"]["annotations"][TLS_HOSTS_ANNOTATION] == ",".join(hosts)
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == hosts
    assert cert.not_valid_after_utc > NOW + datetime.timedelta(days=300)
    assert b"PRIVATE KEY" in base64.b64decode(secret["data"]["tls.key"])


def test_tls_secret_currency() -> None:
    hosts = ["web", "web.ns1"]
    secret = build_tls_secret(owner=owner(webservice_body()), hosts=hosts, now=NOW)
    assert tls_secret_current(secret, hosts=hosts, now=NOW)
    assert not tls_secret_current(secret, hosts=[*hosts, "new.example.com"], now=NOW)  # a new name
    assert not tls_secret_current(secret, hosts=hosts, now=NOW + datetime.timedelta(days=340))  # renew early
