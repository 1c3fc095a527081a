"""The package store against a real S3-compatible server (moto), and Workspace.from_config."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fpgaserve.api.errors import UserError
from fpgaserve.sdk.cluster.store import PackageStore, StoreError, package_key
from fpgaserve.sdk.cluster.workspace import Workspace, find_config
from tests.operator.cluster import Cluster
from tests.operator.helpers import NAMESPACE


def test_upload_download_round_trip(s3_store: PackageStore, tmp_path: Path) -> None:
    data = b"PK\x03\x04 not really a zip, but bytes are bytes" * 1000
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "in.zip").write_bytes(data)
    key = package_key(sha)
    assert key == f"packages/{sha}/service_def.zip"
    assert not s3_store.exists(key)
    s3_store.upload(tmp_path / "in.zip", key)
    assert s3_store.exists(key)
    out = s3_store.download(key, tmp_path / "out" / "service_def.zip", sha256=sha)
    assert out.read_bytes() == data
    with pytest.raises(StoreError, match="does not match its sha256"):
        s3_store.download(key, tmp_path / "bad.zip", sha256="0" * 64)
    assert not (tmp_path / "bad.zip").exists()
    s3_store.delete(key)
    assert not s3_store.exists(key)


def test_wrong_credentials_are_refused_without_echoing_them(s3_store: PackageStore, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    wrong = PackageStore(bucket="no-such-bucket", access_key_id=s3_store.access_key_id,
                         secret_access_key="wrong-secret", endpoint=s3_store.endpoint)  # fmt: skip
    with pytest.raises(StoreError) as caught:
        wrong.upload(tmp_path / "f", "k")
    assert "wrong-secret" not in str(caught.value) and "upload k" in str(caught.value)
    assert "wrong-secret" not in repr(wrong)


def test_unreachable_store_names_the_host() -> None:
    store = PackageStore(bucket="b", access_key_id="a", secret_access_key="s", endpoint="http://127.0.0.1:9")
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:9 unreachable"):
        store.exists("k")


async def test_from_config_found_in_a_parent_directory(
    workspace_dir: Path, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    below = workspace_dir / "notebooks" / "deep"
    below.mkdir(parents=True)
    monkeypatch.chdir(below)
    assert find_config() == workspace_dir / ".fpgaserve" / "config.json"
    ws = Workspace.from_config()
    assert (ws.name, ws.resource_group, ws.subscription_id) == ("emulated-lab", NAMESPACE, "kmock")
    assert ws.location == str(cluster.url).rstrip("/").split("://")[1]
    assert ws.store is not None and ws.store.bucket == "fpgaserve-packages"
    other = Workspace.from_config(workspace_dir, namespace="other")
    assert other.namespace == "other"


async def test_from_config_errors_name_the_problem(workspace_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no context 'nope'"):
        Workspace.from_config(workspace_dir, context="nope")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(UserError, match="not JSON"):
        Workspace.from_config(broken)
    nostore = tmp_path / "nostore" / "config.json"
    nostore.parent.mkdir()
    cfg = json.loads((workspace_dir / ".fpgaserve" / "config.json").read_text())
    cfg.pop("store")
    cfg["kubeconfig"] = str(workspace_dir / ".fpgaserve" / "kubeconfig")
    nostore.write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="no package store"):
        Workspace.from_config(nostore).require_store()
