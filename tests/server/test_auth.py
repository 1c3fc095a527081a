"""Key auth: Bearer keys, rotation through a Kubernetes-style Secret mount, open routes, no key leaks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from fpgaserve.server.auth import KeyFileError, KeyStore
from tests.server.helpers import MakeClient, SecretMount, keys_json

PRIMARY, SECONDARY = "primary-key-0123456789", "secondary-key-9876543210"


@pytest.fixture
def mount(tmp_path: Path) -> SecretMount:
    return SecretMount(tmp_path / "keys", {"keys.json": keys_json(PRIMARY, SECONDARY)})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_either_key_is_accepted_and_nothing_else(mount: SecretMount) -> None:
    store = KeyStore(path=mount.root / "keys.json", check_interval_s=0)
    assert store.check(f"Bearer {PRIMARY}") and store.check(f"bearer  {SECONDARY} ")
    for header in (None, "", "Bearer", "Bearer ", f"Basic {PRIMARY}", f"Bearer {PRIMARY}x", PRIMARY):
        assert not store.check(header), header


def test_a_rotation_by_symlink_swap_is_picked_up_without_restart(mount: SecretMount) -> None:
    store = KeyStore(path=mount.root / "keys.json", check_interval_s=0)
    mount.update({"keys.json": keys_json("new-primary", PRIMARY)})  # the old primary becomes secondary
    assert store.check("Bearer new-primary") and store.check(f"Bearer {PRIMARY}")
    assert not store.check(f"Bearer {SECONDARY}")


def test_an_unreadable_update_keeps_the_previous_keys_and_logs_no_key(
    mount: SecretMount, caplog: pytest.LogCaptureFixture
) -> None:
    store = KeyStore(path=mount.root / "keys.json", check_interval_s=0)
    with caplog.at_level(logging.DEBUG):
        mount.update({"keys.json": '{"primaryKey": "half-writ'})
        assert store.check(f"Bearer {PRIMARY}")
        mount.update({"keys.json": keys_json("after-the-fix")})
        assert store.check("Bearer after-the-fix") and not store.check(f"Bearer {PRIMARY}")
    assert "keeping the previous keys" in caplog.text
    for key in (PRIMARY, SECONDARY, "after-the-fix", "half-writ"):
        assert key not in caplog.text


def test_checks_are_throttled_by_the_interval(mount: SecretMount) -> None:
    store = KeyStore(path=mount.root / "keys.json", check_interval_s=3600)
    store.check(f"Bearer {PRIMARY}")
    mount.update({"keys.json": keys_json("new-primary")})
    assert store.check(f"Bearer {PRIMARY}")  # not re-read yet: the next check is an hour away
    assert store.reload() and store.check("Bearer new-primary")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("not json", "is not JSON"),
        ("[1, 2]", "must hold"),
        ('{"primaryKey": 5}', "must be a string"),
        ('{"primaryKey": "", "secondaryKey": null}', "neither primaryKey nor secondaryKey"),
    ],
)
def test_a_bad_keys_file_fails_at_start(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "keys.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KeyFileError, match=message):
        KeyStore(path=path)


async def test_routes_need_a_key_except_probes_metrics_and_the_api_document(
    make_client: MakeClient, mount: SecretMount, png: bytes
) -> None:
    client = await make_client(keys_file=mount.root / "keys.json", keys_check_interval_s=0)
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/v2/health/live", "/v2/health/ready"):
        assert (await client.get(path)).status == 200, path
    for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {PRIMARY}"}):
        response = await client.post("/score", data=png, headers={"Content-Type": "image/png", **headers})
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        body: dict[str, Any] = await response.json()
        assert "Authorization: Bearer <key>" in body["error"]
    for path in ("/v2", "/v2/models/fake", "/v1/models/fake", "/nowhere"):
        assert (await client.get(path)).status == 401, path
    for key in (PRIMARY, SECONDARY):
        response = await client.post("/score", data=png, headers={"Content-Type": "image/png", **bearer(key)})
        assert response.status == 200
    metrics = await (await client.get("/metrics")).text()
    assert "fpgaserve_auth_failures_total 7.0" in metrics


async def test_a_rotated_key_works_on_the_running_server(make_client: MakeClient, mount: SecretMount) -> None:
    client = await make_client(keys_file=mount.root / "keys.json", keys_check_interval_s=0)
    mount.update({"keys.json": keys_json("rotated")})
    assert (await client.get("/v2", headers=bearer("rotated"))).status == 200
    assert (await client.get("/v2", headers=bearer(PRIMARY))).status == 401
