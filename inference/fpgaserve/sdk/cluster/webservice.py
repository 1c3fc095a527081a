"""``Webservice``: a deployed model, backed by an FpgaWebservice; Azure ML's names and calls.

Role: the twin of ``azureml.core.webservice.Webservice`` for ``fpgaserve.sdk.core`` and
``fpgaserve service`` (its deployment flavours are in ``flavours.py``, the transport over a
forwarded port in ``forwarded.py``). It reads the status the operator writes: ``phase`` Deploying/Ready/Failed and the ``Ready``
condition's reason (StorageInitFailed, ImagePullFailed, CrashLoop, Unschedulable,
ProgressDeadlineExceeded...). ``run`` scores through the Ingress when there is one, else through
the workspace's connector (a port-forward by default) to a ready pod, with TLS verified against the
service's own certificate for its in-cluster DNS name.
"""

from __future__ import annotations

import base64
import builtins
import json
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from fpgaserve.api.crd_models import (
    API_VERSION,
    REGENERATE_KEY_ANNOTATION,
    WEBSERVICE_KIND,
    FpgaWebserviceSpec,
)
from fpgaserve.api.kinds import EVENT, FPGAWEBSERVICE, POD, SECRET, ApiError
from fpgaserve.api.naming import (
    KEYS_FILENAME,
    TLS_SECRET_CERT,
    TLS_SECRET_KEY,
    WEBSERVICE_LABEL,
    keys_secret_name,
    tls_secret_name,
)
from fpgaserve.api.serving import KEYS_PRIMARY, KEYS_SECONDARY
from fpgaserve.sdk.client import read_image_bytes
from fpgaserve.sdk.cluster.config import DeploymentConfiguration, ImageConfiguration, build_spec
from fpgaserve.sdk.cluster.forwarded import post_score
from fpgaserve.sdk.cluster.model import Model, ready_condition
from fpgaserve.sdk.cluster.workspace import Workspace
from fpgaserve.sdk.exceptions import WebserviceException

__all__ = ["Webservice"]

FAILED_REASONS = (
    "StorageInitFailed",
    "ImagePullFailed",
    "CrashLoop",
    "Unschedulable",
    "ProgressDeadlineExceeded",
)
USER_TLS_SUFFIX = "-user-tls"


class Webservice:
    """A web service: ``Webservice(ws, name)`` or WebserviceException when there is none."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        body = workspace.kube.get(FPGAWEBSERVICE, workspace.namespace, name)
        if body is None:
            raise WebserviceException(f"web service {name!r} not found in namespace {workspace.namespace}")
        self.workspace = workspace
        self.name = name
        self._body = body

    # -- create, list --------------------------------------------------------------------------

    @classmethod
    def deploy_from_model(
        cls,
        workspace: Workspace,
        name: str,
        models: builtins.list[Model],
        image_config: ImageConfiguration | None = None,
        deployment_config: DeploymentConfiguration | None = None,
        overwrite: bool = False,
    ) -> Webservice:
        """Create (or with ``overwrite``, replace the spec of) the FpgaWebservice ``name``; returns
        at once: call ``wait_for_deployment``."""
        if len(models) != 1:
            raise WebserviceException(f"an FPGA web service deploys exactly one model ({len(models)} given)")
        deployment = deployment_config or DeploymentConfiguration()
        kube, ns = workspace.kube, workspace.namespace
        exists = kube.get(FPGAWEBSERVICE, ns, name) is not None
        if exists and not overwrite:
            raise WebserviceException(f"web service {name} exists; pass overwrite=True to replace it")
        tls_secret = _own_tls_secret(workspace, name, deployment) if deployment.own_certificate else None
        spec = build_spec(
            model=models[0].name, image=image_config, deployment=deployment, tls_secret=tls_secret
        )
        if exists:
            # Replace the whole spec: a merge patch would keep fields the new config leaves out.
            live = kube.get(FPGAWEBSERVICE, ns, name) or {}
            kube.patch(FPGAWEBSERVICE, ns, name, {"spec": _replacement(live.get("spec") or {}, spec)})
        else:
            body = {
                "apiVersion": API_VERSION,
                "kind": WEBSERVICE_KIND,
                "metadata": {"name": name},
                "spec": spec,
            }
            kube.create(FPGAWEBSERVICE, ns, body)
        return cls(workspace, name)

    @classmethod
    def list(cls, workspace: Workspace, *, model_name: str | None = None) -> builtins.list[Webservice]:
        out = []
        for body in workspace.kube.list(FPGAWEBSERVICE, workspace.namespace):
            if model_name is None or (body.get("spec") or {}).get("model") == model_name:
                service = cls.__new__(cls)
                service.workspace, service.name, service._body = workspace, body["metadata"]["name"], body
                out.append(service)
        return sorted(out, key=lambda s: s.name)

    # -- state ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        body = self.workspace.kube.get(FPGAWEBSERVICE, self.workspace.namespace, self.name)
        if body is None:
            raise WebserviceException(f"web service {self.name!r} no longer exists")
        self._body = body

    @property
    def spec(self) -> FpgaWebserviceSpec:
        return FpgaWebserviceSpec.model_validate(self._body["spec"])

    @property
    def _status(self) -> dict[str, Any]:
        status: dict[str, Any] = self._body.get("status") or {}
        return status

    @property
    def state(self) -> str:
        """Pending, Deploying, Ready or Failed (as last read; ``refresh`` reads again)."""
        return str(self._status.get("phase") or "Pending")

    @property
    def error(self) -> str | None:
        """``reason: message`` of the Ready condition while not Ready, else None."""
        ready = ready_condition(self._body)
        if not ready or ready.get("status") == "True":
            return None
        return f"{ready.get('reason', '')}: {ready.get('message', '')}".strip(": ")

    @property
    def scoring_uri(self) -> str | None:
        """The Ingress URL when there is one, else the in-cluster URL (``/score``)."""
        base = self._status.get("url") or self._status.get("internalUrl")
        return f"{str(base).rstrip('/')}/score" if base else None

    def serialize(self) -> dict[str, Any]:
        """A plain description (what ``fpgaserve service show -o json`` prints)."""
        return {"name": self.name, "model": self.spec.model, "state": self.state, "error": self.error,
                "scoringUri": self.scoring_uri, "replicas": self._status.get("replicas"),
                "readyReplicas": self._status.get("readyReplicas")}  # fmt: skip

    def wait_for_deployment(
        self,
        show_output: bool = False,
        timeout_sec: float | None = None,
        *,
        printer: Callable[[str], None] = print,
    ) -> None:
        """Wait until Ready; print condition changes and Events with ``show_output``; raise
        WebserviceException (``reason``, the failing container's log tail) when it fails or times out."""
        deadline = time.monotonic() + (timeout_sec if timeout_sec is not None else 900.0)
        seen_conditions: set[tuple[str, str, str]] = set()
        seen_events: set[str] = set()
        while True:
            self.refresh()
            status = self._status
            current = status.get("observedGeneration") == self._body["metadata"].get("generation")
            if show_output:
                for c in status.get("conditions") or []:
                    mark = (str(c.get("type")), str(c.get("status")), str(c.get("reason")))
                    if mark not in seen_conditions:
                        seen_conditions.add(mark)
                        printer(f"{self.name}: {mark[0]}={mark[1]} {mark[2]} {c.get('message', '')}".rstrip())
                for line in self._new_events(seen_events):
                    printer(f"{self.name}: event {line}")
            if current and status.get("phase") == "Ready":
                if show_output:
                    printer(f"{self.name}: Ready at {self.scoring_uri}")
                return
            if current and status.get("phase") == "Failed":
                reason = str(ready_condition(self._body).get("reason") or "Failed")
                logs = self.get_logs(30, init=reason == "StorageInitFailed")
                raise WebserviceException(
                    f"web service {self.name} failed: {self.error}" + (f"\n--- log tail ---\n{logs}" if logs else ""),
                    reason=reason, logs=logs,
                )  # fmt: skip
            if time.monotonic() > deadline:
                raise WebserviceException(
                    f"web service {self.name} not Ready after {timeout_sec:g} s: {self.error or self.state}",
                    reason=str(ready_condition(self._body).get("reason") or "") or None,
                )
            time.sleep(0.25)

    def _new_events(self, seen: set[str]) -> builtins.list[str]:
        try:
            events = self.workspace.kube.list(EVENT, self.workspace.namespace)
        except ApiError:
            return []
        out = []
        for event in events:
            uid = str(event.get("metadata", {}).get("uid") or event.get("metadata", {}).get("name"))
            if (event.get("involvedObject") or {}).get("name") == self.name and uid not in seen:
                seen.add(uid)
                out.append(f"{event.get('type', '')} {event.get('reason', '')}: {event.get('message', '')}")
        return out

    # -- keys, logs ----------------------------------------------------------------------------

    def get_keys(self) -> tuple[str, str]:
        """The primary and secondary keys, from the keys Secret."""
        if not self.spec.auth.enabled:
            raise WebserviceException(f"web service {self.name} has auth disabled: there are no keys")
        secret = self.workspace.kube.get(SECRET, self.workspace.namespace, keys_secret_name(self.name))
        encoded = ((secret or {}).get("data") or {}).get(KEYS_FILENAME)
        if not encoded:
            raise WebserviceException(f"web service {self.name}: its keys are not generated yet")
        keys = json.loads(base64.b64decode(encoded))
        return str(keys[KEYS_PRIMARY]), str(keys[KEYS_SECONDARY])

    def regen_key(self, key: str, set_key: str | None = None, *, timeout_sec: float = 60.0) -> None:
        """Replace the "Primary" or "Secondary" key: with ``set_key``, by that value (written to the
        Secret), else by a fresh one the operator generates (waits until the key changed)."""
        if key not in ("Primary", "Secondary"):
            raise WebserviceException(f"key must be 'Primary' or 'Secondary', not {key!r}")
        slot = 0 if key == "Primary" else 1
        before = self.get_keys()
        kube, ns = self.workspace.kube, self.workspace.namespace
        if set_key is not None:
            if len(set_key) < 16:
                raise WebserviceException("set_key: use at least 16 characters")
            keys = {KEYS_PRIMARY: before[0], KEYS_SECONDARY: before[1]}
            keys[KEYS_PRIMARY if slot == 0 else KEYS_SECONDARY] = set_key
            data = {KEYS_FILENAME: base64.b64encode(json.dumps(keys).encode()).decode()}
            kube.patch(SECRET, ns, keys_secret_name(self.name), {"data": data})
            return
        annotation = {"metadata": {"annotations": {REGENERATE_KEY_ANNOTATION: key.lower()}}}
        kube.patch(FPGAWEBSERVICE, ns, self.name, annotation)
        deadline = time.monotonic() + timeout_sec
        while self.get_keys()[slot] == before[slot]:
            if time.monotonic() > deadline:
                raise WebserviceException(
                    f"the operator did not regenerate the {key} key in {timeout_sec:g} s"
                )
            time.sleep(0.2)

    def _pods(self) -> builtins.list[dict[str, Any]]:
        return self.workspace.kube.list(
            POD, self.workspace.namespace, label_selector=f"{WEBSERVICE_LABEL}={self.name}"
        )

    def get_logs(self, num_lines: int = 5000, init: bool = False) -> str:
        """The last ``num_lines`` of the server container's log (storage-init's with ``init``) of
        each pod; "" when there are no pods or the API serves no logs."""
        container = "storage-init" if init else "server"
        out = []
        for pod in self._pods():
            name = pod["metadata"]["name"]
            text = self.workspace.kube.pod_log(
                self.workspace.namespace, name, container=container, tail_lines=num_lines
            )
            if text:
                out.append(f"== {name}/{container} ==\n{text.rstrip()}")
        return "\n".join(out)

    # -- change, delete ------------------------------------------------------------------------

    def update(
        self,
        *,
        models: builtins.list[Model] | None = None,
        image_config: ImageConfiguration | None = None,
        deployment_config: DeploymentConfiguration | None = None,
        num_replicas: int | None = None,
        auth_enabled: bool | None = None,
        fpga_count: int | None = None,
    ) -> None:
        """Change the service (a whole new config, or single fields); call ``wait_for_deployment``."""
        patch: dict[str, Any] = {}
        if deployment_config is not None or image_config is not None:
            tls_secret = None
            if deployment_config is not None and deployment_config.own_certificate:
                tls_secret = _own_tls_secret(self.workspace, self.name, deployment_config)
            patch = build_spec(model=self.spec.model, image=image_config,
                               deployment=deployment_config or DeploymentConfiguration(), tls_secret=tls_secret)  # fmt: skip
        if models is not None:
            if len(models) != 1:
                raise WebserviceException("an FPGA web service deploys exactly one model")
            patch["model"] = models[0].name
        if num_replicas is not None:
            patch["replicas"] = num_replicas
        if auth_enabled is not None:
            patch["auth"] = {"enabled": auth_enabled}
        if fpga_count is not None:
            patch["fpga"] = {**self._body["spec"].get("fpga", {}), "count": fpga_count}
        merged = {**self._body["spec"], **patch}
        try:
            FpgaWebserviceSpec.model_validate(merged)
        except ValueError as exc:
            raise WebserviceException(f"invalid update: {exc}") from None
        self._body = self.workspace.kube.patch(
            FPGAWEBSERVICE, self.workspace.namespace, self.name, {"spec": patch}
        )

    def delete(self, *, timeout_sec: float = 300.0) -> None:
        """Delete the service and wait until it is gone (its objects go with it)."""
        kube, ns = self.workspace.kube, self.workspace.namespace
        kube.delete(FPGAWEBSERVICE, ns, self.name)
        deadline = time.monotonic() + timeout_sec
        while kube.get(FPGAWEBSERVICE, ns, self.name) is not None:
            if time.monotonic() > deadline:
                raise WebserviceException(f"web service {self.name} still exists after {timeout_sec:g} s")
            time.sleep(0.2)
        kube.delete(SECRET, ns, self.name + USER_TLS_SUFFIX)

    # -- scoring -------------------------------------------------------------------------------

    def run(self, input_data: bytes | str | Path | IO[Any]) -> builtins.list[float]:
        """Score one image; its class probabilities (index = class id), as ``LocalWebservice.run``."""
        return list(self.score(input_data)["results"][0]["probabilities"])

    def score(self, input_data: bytes | str | Path | IO[Any], *, timeout: float = 60.0) -> dict[str, Any]:
        """Score one image; the whole ``/score`` answer."""
        self.refresh()
        body = read_image_bytes(input_data)
        key = self.get_keys()[0] if self.spec.auth.enabled else None
        if self._status.get("url"):  # through the Ingress, trusted like any public site
            from fpgaserve.sdk.client import score

            return score(str(self._status["url"]), body, key=key, timeout=timeout)
        pod = self._ready_pod()
        tls = self.spec.tls.enabled
        port = 8443 if tls else 8080
        with self.workspace.connector.connect(
            api_client=self.workspace.api_client, namespace=self.workspace.namespace, pod=pod, port=port
        ) as (host, local_port):
            context = ssl.create_default_context(cadata=self._service_ca()) if tls else None
            return post_score(host, local_port, body, key=key, context=context,
                               server_name=f"{self.name}.{self.workspace.namespace}.svc", timeout=timeout)  # fmt: skip

    def _ready_pod(self) -> str:
        for pod in self._pods():
            conditions = (pod.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                return str(pod["metadata"]["name"])
        raise WebserviceException(
            f"web service {self.name} has no ready pod (state {self.state}: {self.error})"
        )

    def _service_ca(self) -> str:
        """The certificate the server presents (self-signed) or the CA of the user's Secret."""
        tls = self.spec.tls
        name = tls.secret_name if tls.mode == "Secret" and tls.secret_name else tls_secret_name(self.name)
        secret = self.workspace.kube.get(SECRET, self.workspace.namespace, name)
        data = (secret or {}).get("data") or {}
        encoded = data.get("ca.crt") or data.get(TLS_SECRET_CERT)
        if not encoded:
            raise WebserviceException(f"web service {self.name}: no certificate in Secret {name} yet")
        return base64.b64decode(encoded).decode()

    def __repr__(self) -> str:
        return f"Webservice(workspace={self.workspace.name!r}, name={self.name!r}, state={self.state!r})"


def _replacement(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``old`` into ``new`` (null for every field ``new`` leaves out,
    at any depth: a merge patch otherwise keeps them)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        before = old.get(key)
        patch[key] = (
            _replacement(before, value) if isinstance(before, dict) and isinstance(value, dict) else value
        )
    return patch


def _own_tls_secret(workspace: Workspace, name: str, deployment: DeploymentConfiguration) -> str:
    """A kubernetes.io/tls Secret with the user's PEMs (created or updated); its name."""
    cert, key = deployment.pems()
    secret_name = name + USER_TLS_SUFFIX
    data = {TLS_SECRET_CERT: base64.b64encode(cert).decode(), TLS_SECRET_KEY: base64.b64encode(key).decode()}
    kube, ns = workspace.kube, workspace.namespace
    if kube.get(SECRET, ns, secret_name) is None:
        kube.create(SECRET, ns, {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                                 "metadata": {"name": secret_name}, "data": data})  # fmt: skip
    else:
        kube.patch(SECRET, ns, secret_name, {"data": data})
    return secret_name
