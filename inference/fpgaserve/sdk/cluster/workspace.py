"""``Workspace``: a cluster handle (kubeconfig context, namespace, package store), Azure's name.

Role: the first object of the notebook flow; ``Model`` and ``Webservice`` take it. ``from_config``
reads a small JSON file searched like Azure's ``config.json`` (the given path, else
``.fpgaserve/config.json``, ``.azureml/config.json`` or ``config.json`` in the current directory
and its parents) and falls back to the current kubeconfig context with its namespace:

    {"name": "lab", "context": "kind-kind", "namespace": "default", "kubeconfig": "~/.kube/config",
     "store": {"endpoint": "http://minio:9000", "bucket": "models", "region": "us-east-1",
               "accessKeyId": "...", "secretAccessKey": "...", "caFile": null, "prefix": "packages"}}

The store's keys may instead come from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import config as kubeconfig
from kubernetes.client import ApiClient

from fpgaserve.api.errors import UserError
from fpgaserve.sdk.cluster.api import SyncKube
from fpgaserve.sdk.cluster.connect import Connector, PortForward
from fpgaserve.sdk.cluster.store import PackageStore

__all__ = ["CONFIG_NAMES", "Workspace", "find_config"]

CONFIG_NAMES = (".fpgaserve/config.json", ".azureml/config.json", "config.json")


def find_config(start: Path | None = None) -> Path | None:
    """The first config file in ``start`` (default: the current directory) or a parent."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        for name in CONFIG_NAMES:
            if (directory / name).is_file():
                return directory / name
    return None


def _store(raw: dict[str, Any] | None) -> PackageStore | None:
    if not raw:
        return None
    key_id = raw.get("accessKeyId") or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = raw.get("secretAccessKey") or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not raw.get("bucket") or not key_id or not secret:
        raise UserError("store: needs bucket, accessKeyId and secretAccessKey (or the AWS_* variables)")
    return PackageStore(
        bucket=raw["bucket"], access_key_id=key_id, secret_access_key=secret, endpoint=raw.get("endpoint"),
        region=raw.get("region") or "us-east-1", prefix=raw.get("prefix", "packages"), ca_file=raw.get("caFile"),
    )  # fmt: skip


class Workspace:
    """Where models and services live: one namespace of one cluster, and a package store."""

    def __init__(
        self,
        *,
        api_client: ApiClient,
        namespace: str = "default",
        name: str | None = None,
        context: str | None = None,
        store: PackageStore | None = None,
        connector: Connector | None = None,
    ) -> None:
        self.api_client = api_client
        self.kube = SyncKube(api_client)
        self.namespace = namespace
        self.context = context
        self.store = store
        self.connector: Connector = connector or PortForward()
        self.name = name or context or namespace

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        context: str | None = None,
        namespace: str | None = None,
        connector: Connector | None = None,
    ) -> Workspace:
        """A workspace from a config file (see the module doc); ``context`` and ``namespace``
        override the file's."""
        found: Path | None
        if path is not None:
            found = Path(path).expanduser()
            if found.is_dir():
                found = find_config(found)
            if found is None or not found.is_file():
                raise UserError(f"{path}: no workspace config file there")
        else:
            found = find_config()
        raw: dict[str, Any] = {}
        if found is not None:
            try:
                raw = json.loads(found.read_text())
            except ValueError as exc:
                raise UserError(f"{found}: not JSON: {exc}") from None
        kubeconfig_file = raw.get("kubeconfig")
        if kubeconfig_file is not None:
            kubeconfig_file = str(
                (found.parent if found else Path.cwd()) / Path(kubeconfig_file).expanduser()
            )
        context = context or raw.get("context")
        try:
            contexts, active = kubeconfig.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=kubeconfig_file
            )
        except (kubeconfig.ConfigException, OSError) as exc:
            raise UserError(
                f"no usable kubeconfig ({exc}); set KUBECONFIG or 'kubeconfig' in the config"
            ) from None
        chosen = next((c for c in contexts if c["name"] == context), None) if context else active
        if chosen is None:
            raise UserError(
                f"kubeconfig has no context {context!r}; `kubectl config get-contexts` lists them"
            )
        api_client = kubeconfig.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig_file, context=chosen["name"]
        )
        namespace = (
            namespace or raw.get("namespace") or chosen.get("context", {}).get("namespace") or "default"
        )
        return cls(
            api_client=api_client, namespace=namespace, name=raw.get("name"), context=chosen["name"],
            store=_store(raw.get("store")), connector=connector,
        )  # fmt: skip

    # Azure ML's attributes, mapped onto the cluster so that the article's print works.
    @property
    def resource_group(self) -> str:
        """The namespace (what groups a workspace's resources)."""
        return self.namespace

    @property
    def location(self) -> str:
        """The API server's host."""
        return urlsplit(str(self.api_client.configuration.host)).netloc

    @property
    def subscription_id(self) -> str:
        """The kubeconfig context (what is billed / authorised)."""
        return self.context or "(in-cluster)"

    def require_store(self) -> PackageStore:
        if self.store is None:
            raise UserError(
                "this workspace has no package store: add a 'store' section (endpoint, bucket, keys) to its config"
            )
        return self.store

    def __repr__(self) -> str:
        return f"Workspace(name={self.name!r}, namespace={self.namespace!r}, location={self.location!r})"
