"""``Model``: a service package registered in a workspace, backed by an FpgaModel.

Role: the twin of ``azureml.core.model.Model`` for ``fpgaserve.sdk.core`` and ``fpgaserve model``.
``register`` verifies the package, uploads it to the workspace's store under its sha256, creates
the reader Secret and creates or updates the FpgaModel (built through ``FpgaModelSpec``, so the SDK
cannot drift from the CRD), then waits until the operator reports it Ready.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from fpgaserve.api.crd_models import API_VERSION, MODEL_KIND, FpgaModelSpec, ModelSource, SecretReference
from fpgaserve.api.kinds import FPGAMODEL, FPGAWEBSERVICE, SECRET
from fpgaserve.sdk.cluster.store import package_key
from fpgaserve.sdk.cluster.workspace import Workspace
from fpgaserve.sdk.exceptions import ModelException, ModelInUseException

__all__ = ["PROPERTIES_ANNOTATION", "STORE_SECRET", "Model", "ready_condition"]

PROPERTIES_ANNOTATION = "fpgaserve.io/properties"
STORE_SECRET = "fpgaserve-store-reader"  # one reader Secret per namespace, made by the SDK
DEFAULT_TIMEOUT = 300.0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def ready_condition(obj: dict[str, Any]) -> dict[str, Any]:
    """The object's ``Ready`` condition ({} when it has none yet)."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), {})


class Model:
    """A registered model: ``Model(ws, name)`` looks one up (ModelException when absent)."""

    def __init__(self, workspace: Workspace, name: str, *, _body: dict[str, Any] | None = None) -> None:
        body = _body or workspace.kube.get(FPGAMODEL, workspace.namespace, name)
        if body is None:
            raise ModelException(f"model {name!r} not found in namespace {workspace.namespace}")
        self.workspace = workspace
        self.name = name
        self._body = body

    # -- registry ------------------------------------------------------------------------------

    @classmethod
    def register(
        cls,
        workspace: Workspace,
        model_path: str | os.PathLike[str],
        model_name: str,
        tags: dict[str, str] | None = None,
        properties: dict[str, str] | None = None,
        description: str | None = None,
        *,
        timeout_sec: float = DEFAULT_TIMEOUT,
    ) -> Model:
        """Upload ``model_path`` (a service_def.zip) and create or update the FpgaModel ``model_name``."""
        from fpgaserve.package import verify_package  # zip and manifest checks, no TensorFlow

        path = Path(model_path).expanduser()
        try:
            verify_package(path)
        except (OSError, ValueError) as exc:
            raise ModelException(f"{path}: not a valid service package: {exc}") from None
        store = workspace.require_store()
        sha = _sha256(path)
        key = package_key(sha, prefix=store.prefix)
        if not store.exists(key):
            store.upload(path, key)
        _ensure_reader_secret(workspace)
        spec = FpgaModelSpec(
            source=ModelSource(uri=store.uri(key), sha256=sha, secret_ref=SecretReference(name=STORE_SECRET),
                               endpoint=store.endpoint),
            description=description or "", tags=dict(tags or {}),
        )  # fmt: skip
        metadata: dict[str, Any] = {
            "name": model_name,
            "annotations": {PROPERTIES_ANNOTATION: json.dumps(dict(properties or {}), sort_keys=True)},
        }
        body = {"apiVersion": API_VERSION, "kind": MODEL_KIND, "metadata": metadata,
                "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True)}  # fmt: skip
        kube, ns = workspace.kube, workspace.namespace
        if kube.get(FPGAMODEL, ns, model_name) is None:
            kube.create(FPGAMODEL, ns, body)
        else:
            kube.patch(FPGAMODEL, ns, model_name, {"metadata": metadata, "spec": body["spec"]})
        model = cls(workspace, model_name)
        model.wait_until_ready(timeout_sec=timeout_sec)
        return model

    @classmethod
    def list(cls, workspace: Workspace, *, tags: dict[str, str] | None = None) -> builtins.list[Model]:
        """The workspace's models (those whose tags include ``tags``), by name."""
        out = []
        for body in workspace.kube.list(FPGAMODEL, workspace.namespace):
            have = (body.get("spec") or {}).get("tags") or {}
            if all(have.get(k) == v for k, v in (tags or {}).items()):
                out.append(cls(workspace, body["metadata"]["name"], _body=body))
        return sorted(out, key=lambda m: m.name)

    # -- properties ----------------------------------------------------------------------------

    def refresh(self) -> None:
        body = self.workspace.kube.get(FPGAMODEL, self.workspace.namespace, self.name)
        if body is None:
            raise ModelException(f"model {self.name!r} no longer exists")
        self._body = body

    @property
    def spec(self) -> FpgaModelSpec:
        return FpgaModelSpec.model_validate(self._body["spec"])

    @property
    def sha256(self) -> str:
        return self.spec.source.sha256

    @property
    def tags(self) -> dict[str, str]:
        return dict(self.spec.tags)

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def properties(self) -> dict[str, str]:
        raw = (self._body["metadata"].get("annotations") or {}).get(PROPERTIES_ANNOTATION, "{}")
        loaded: dict[str, str] = json.loads(raw)
        return loaded

    @property
    def state(self) -> str:
        return str((self._body.get("status") or {}).get("phase") or "Pending")

    @property
    def used_by(self) -> builtins.list[str]:
        """Web services whose spec deploys this model, read live: the operator's ``status.usedBy``
        lags both ways (a service created a moment ago, or just deleted)."""
        return sorted(
            web["metadata"]["name"]
            for web in self.workspace.kube.list(FPGAWEBSERVICE, self.workspace.namespace)
            if (web.get("spec") or {}).get("model") == self.name
        )

    def serialize(self) -> dict[str, Any]:
        """A plain description (what ``fpgaserve model show -o json`` prints)."""
        source = self.spec.source
        return {"name": self.name, "state": self.state, "sha256": self.sha256, "uri": source.uri,
                "tags": self.tags, "properties": self.properties, "description": self.description,
                "usedBy": self.used_by}  # fmt: skip

    # -- operations ----------------------------------------------------------------------------

    def wait_until_ready(self, *, timeout_sec: float = DEFAULT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout_sec
        while True:
            self.refresh()
            status = self._body.get("status") or {}
            current = status.get("observedGeneration") == self._body["metadata"].get("generation")
            if current and status.get("phase") == "Ready":
                return
            if current and status.get("phase") == "Failed":
                ready = ready_condition(self._body)
                raise ModelException(
                    f"model {self.name} failed: {ready.get('reason', '')}: {ready.get('message', '')}"
                )
            if time.monotonic() > deadline:
                ready = ready_condition(self._body)
                raise ModelException(
                    f"model {self.name} not Ready after {timeout_sec:g} s (phase {status.get('phase')}, "
                    f"{ready.get('reason', 'no reason yet')}); is the fpgaserve operator running?"
                )
            time.sleep(0.2)

    def download(self, target_dir: str | os.PathLike[str] = ".", exist_ok: bool = False) -> str:
        """Fetch the package into ``target_dir`` (checked against its sha256); its path."""
        source = self.spec.source
        store = self.workspace.require_store()
        prefix = f"s3://{store.bucket}/"
        if not source.uri.startswith(prefix):
            raise ModelException(f"model {self.name} lives at {source.uri}, outside this workspace's store")
        dest = Path(target_dir).expanduser() / "service_def.zip"
        if dest.exists() and not exist_ok:
            raise ModelException(f"{dest} exists; pass exist_ok=True to replace it")
        store.download(source.uri.removeprefix(prefix), dest, sha256=source.sha256)
        return str(dest)

    def delete(self, *, timeout_sec: float = DEFAULT_TIMEOUT) -> None:
        """Delete the FpgaModel and wait until it is gone; refused while web services use it.

        The package stays in the store: its key is content-addressed and may serve other models."""
        self.refresh()
        users = self.used_by
        if users:
            raise ModelInUseException(
                f"model {self.name} is used by web service(s) {', '.join(users)}; delete them first",
                services=users,
            )
        kube, ns = self.workspace.kube, self.workspace.namespace
        kube.delete(FPGAMODEL, ns, self.name)
        deadline = time.monotonic() + timeout_sec
        while kube.get(FPGAMODEL, ns, self.name) is not None:
            if time.monotonic() > deadline:
                raise ModelException(f"model {self.name} still exists after {timeout_sec:g} s")
            time.sleep(0.2)

    def __repr__(self) -> str:
        return f"Model(workspace={self.workspace.name!r}, name={self.name!r}, sha256={self.sha256[:12]!r})"


def _ensure_reader_secret(workspace: Workspace) -> None:
    """The namespace's store reader Secret holds the store's current keys (created or updated)."""
    import base64

    store = workspace.require_store()
    data = {k: base64.b64encode(v.encode()).decode() for k, v in store.reader_secret_data().items()}
    kube, ns = workspace.kube, workspace.namespace
    live = kube.get(SECRET, ns, STORE_SECRET)
    if live is None:
        kube.create(SECRET, ns, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                 "metadata": {"name": STORE_SECRET, "labels": {"app.kubernetes.io/managed-by": "fpgaserve-sdk"}},
                                 "data": data})  # fmt: skip
    elif live.get("data") != data:
        kube.patch(SECRET, ns, STORE_SECRET, {"data": data})
