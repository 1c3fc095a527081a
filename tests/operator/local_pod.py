"""Run an operator-generated pod as local processes: storage-init, then the server.

``LocalPod`` takes a Deployment's pod template and the Secrets it mounts (as the API returns
them), lays the volumes out as directories (emptyDirs empty, Secrets as files, hostPaths as they
are), gives the server container an emulated FPGA through the device plugin's real Allocate
answer, runs the init container to completion and starts the server on the pod's container port.
``run_pod_locally`` (test_pod_contract.py) builds a pod itself and scores a photo through it
(HTTPS and gRPC, on free ports of this machine);
``tests/cluster`` runs the pod the operator wrote into kmock, as a kubelet would.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import skimage.data

from fpgaserve.api import serving
from fpgaserve.api.constants import (
    DEFAULT_RESOURCE_NAME,
    DEVICE_MOUNT_ROOT,
    DRA_DRIVER_NAME,
    ENV_DEVICE_IDS,
    ENV_DEVICE_MOUNT_ROOT,
)
from fpgaserve.api.crd_models import FpgaModelSpec, FpgaWebserviceSpec
from fpgaserve.deviceplugin.allocation import allocate_container
from fpgaserve.deviceplugin.state import DeviceInfo, DeviceStore
from fpgaserve.dra.cdi import spec_path
from fpgaserve.dra.checkpoint import Checkpoint
from fpgaserve.dra.prepare import ClaimPreparer, ClaimRef
from fpgaserve.dra.slices import build_resource_slice
from fpgaserve.npu.device import get_device_model
from fpgaserve.operator.claims import build_resource_claim_template
from fpgaserve.operator.config import OperatorConfig
from fpgaserve.operator.secrets import build_keys_secret, build_tls_secret
from fpgaserve.operator.workload import build_deployment
from fpgaserve.sdk.client import score
from fpgaserve.sdk.grpc_client import PredictionClient
from tests.operator.helpers import model_body, owner, webservice_body
from tests.runtime.tiny import LABELS, encode, tiny_classifier, tiny_definition, tiny_featurizer
from tests.support.net import free_port
from tests.support.polling import wait_until

__all__ = ["InitFailed", "LocalPod", "run_pod_locally"]


class InitFailed(AssertionError):
    """The init container exited non-zero (``message`` is its termination message / stderr tail)."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.message, self.returncode = message, returncode


def _materialise_secret(secret: dict[str, Any], volume: dict[str, Any], into: Path) -> None:
    into.mkdir(parents=True)
    items = volume["secret"].get("items") or [{"key": k, "path": k} for k in secret["data"]]
    for item in items:
        (into / item["path"]).write_bytes(base64.b64decode(secret["data"][item["key"]]))


def _host_path(container_path: str, mounts: dict[str, Path]) -> str:
    """Map a container path onto the host directory mounted there (longest mount path first)."""
    for mount in sorted(mounts, key=len, reverse=True):
        if container_path == mount or container_path.startswith(mount + "/"):
            return str(mounts[mount]) + container_path[len(mount) :]
    return container_path


def _argv(container: dict[str, Any], mounts: dict[str, Path]) -> list[str]:
    args = []
    for arg in container["args"]:
        if arg.startswith("file://"):
            args.append("file://" + _host_path(arg.removeprefix("file://"), mounts))
        else:
            args.append(_host_path(arg, mounts))
    return [sys.executable, "-m", "fpgaserve.cli.main", *args]


def _apply_cdi_spec(spec: dict[str, Any], into: Path) -> dict[str, str]:
    """What a CDI-aware runtime does with the spec, as local processes can have it: its env, and each
    device's bind mount as a symlink under ``into`` (the server reads ``into`` instead of the
    container's mount root)."""
    env = dict(item.split("=", 1) for item in spec["containerEdits"]["env"])
    into.mkdir(parents=True)
    for device in spec["devices"]:
        for mount in device["containerEdits"]["mounts"]:
            container_path = PurePosixPath(mount["containerPath"])
            assert container_path.parent == PurePosixPath(DEVICE_MOUNT_ROOT), container_path
            assert "ro" in mount["options"]
            (into / container_path.name).symlink_to(mount["hostPath"], target_is_directory=True)
    return {**env, ENV_DEVICE_MOUNT_ROOT: str(into)}


def _prepare_claim(
    tmp_path: Path, *, web: dict[str, Any], devices: list[DeviceInfo], store_dir: Path, required: int
) -> dict[str, str]:
    """DRA mode: the operator's claim template, allocated as the scheduler would from the driver's
    ResourceSlice, prepared by the driver; the env the CDI spec gives the container."""
    spec = FpgaWebserviceSpec.model_validate(web["spec"])
    template = build_resource_claim_template(owner=web, spec=spec, device_memory_bytes=required)
    assert template is not None
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    selector = request["exactly"]["selectors"][0]["cel"]["expression"]
    assert '.model == "pbs-s10"' in selector and "weightMemory" in selector
    node_slice = build_resource_slice(
        node_name="kind-node", driver=DRA_DRIVER_NAME, devices=devices, generation=1
    )
    (device,) = node_slice["spec"]["devices"]
    # The scheduler's decision, per the selector: the model, and enough weight memory.
    assert device["attributes"]["model"]["string"] == "pbs-s10"
    assert devices[0].model.weight_memory_bytes >= required
    claim = {
        "metadata": {"namespace": "ns1", "name": "web-abcde-fpga", "uid": "claim-uid-1"},
        "spec": template["spec"]["spec"],
        "status": {"allocation": {"devices": {"results": [
            {"request": request["name"], "driver": DRA_DRIVER_NAME, "pool": "kind-node", "device": device["name"]}
        ]}}},
    }  # fmt: skip
    cdi_dir = tmp_path / "cdi"
    preparer = ClaimPreparer(
        driver=DRA_DRIVER_NAME,
        node_name="kind-node",
        read_claim=lambda namespace, name: claim,
        devices=lambda: tuple(devices),
        checkpoint=Checkpoint(tmp_path / "dra-checkpoint.json"),
        cdi_dir=cdi_dir,
        host_state_dir=PurePosixPath(store_dir),
    )
    prepared = preparer.prepare(ClaimRef(namespace="ns1", name="web-abcde-fpga", uid="claim-uid-1"))
    assert [d.device_name for d in prepared.devices] == [device["name"]]
    cdi_spec = json.loads(spec_path(cdi_dir=cdi_dir, claim_uid="claim-uid-1").read_text())
    env = _apply_cdi_spec(cdi_spec, tmp_path / "cdi-mounts")
    assert env[ENV_DEVICE_IDS] == device["name"]
    return env


class LocalPod:
    """One pod of a Deployment's template, run as local processes under ``workdir``."""

    def __init__(
        self,
        pod: Mapping[str, Any],
        secrets: Mapping[str, dict[str, Any]],
        workdir: Path,
        *,
        host_port: int | None = None,
        grpc_host_port: int | None = None,
    ) -> None:
        """``host_port``, ``grpc_host_port``: where the container's HTTP and gRPC ports are published
        on this machine (as ``docker run -p host_port:port``); default the container ports."""
        self.pod, self.workdir = pod, workdir
        self.volumes: dict[str, Path] = {}
        for volume in pod["volumes"]:
            where = workdir / "volumes" / volume["name"]
            if "emptyDir" in volume:
                where.mkdir(parents=True)
            elif "secret" in volume:
                _materialise_secret(secrets[volume["secret"]["secretName"]], volume, where)
            elif "hostPath" in volume:
                where = Path(volume["hostPath"]["path"])
            else:
                raise AssertionError(f"volume type of {volume['name']} not materialised")
            self.volumes[volume["name"]] = where
        (self.server,) = pod["containers"]
        self.container_port = int(self.server["ports"][0]["containerPort"])
        self.port = host_port or self.container_port
        container_ports = {p["name"]: int(p["containerPort"]) for p in self.server["ports"]}
        self.grpc_container_port = container_ports.get("grpc")
        self.grpc_port = grpc_host_port or self.grpc_container_port
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _env(self, container: Mapping[str, Any], extra: Mapping[str, str]) -> dict[str, str]:
        env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env", [])}, **extra}
        env["TMPDIR"] = str(self.volumes["tmp"])  # the only writable mount
        return env

    def run_init(self) -> None:
        """Run the init container(s) to completion (InitFailed with its stderr tail when one fails)."""
        for init in self.pod.get("initContainers") or []:
            mounts = {m["mountPath"]: self.volumes[m["name"]] for m in init["volumeMounts"]}
            done = subprocess.run(_argv(init, mounts), env=self._env(init, {}), capture_output=True, text=True,
                                  timeout=300, check=False)  # fmt: skip
            if done.returncode != 0:
                raise InitFailed(done.stderr[-3000:], done.returncode)

    def start_server(self, *, device_env: Mapping[str, str] | None = None) -> None:
        """Start the server container with an emulated FPGA: ``device_env`` (a DRA claim's CDI
        environment), or by default one device from the device plugin's Allocate answer."""
        if device_env is None:
            store_dir = self.workdir / "plugin-state"
            devices = DeviceStore(store_dir).create(
                node_name="kind-node", count=1, model=get_device_model("pbs-s10")
            )
            allocation = allocate_container(
                requested=[devices[0].device_id], devices=devices, host_state_dir=PurePosixPath(store_dir)
            )
            assert all(m.container_path.startswith(DEVICE_MOUNT_ROOT) for m in allocation.mounts)
            device_env = {**allocation.envs, ENV_DEVICE_MOUNT_ROOT: str(store_dir)}
        mounts = {m["mountPath"]: self.volumes[m["name"]] for m in self.server["volumeMounts"]}
        argv = _argv(self.server, mounts)
        # The server binds its container ports: publish them on this machine's ports instead.
        published = {
            "--port": (self.container_port, self.port),
            "--grpc-port": (self.grpc_container_port, self.grpc_port),
        }
        for flag, (inside, outside) in published.items():
            if flag in argv:
                at = argv.index(flag)
                assert argv[at + 1] == str(inside), argv
                argv[at + 1] = str(outside)
                with socket.socket() as probe_port:
                    if probe_port.connect_ex(("127.0.0.1", int(str(outside)))) == 0:
                        raise AssertionError(
                            f"port {outside} is taken on this machine; the pod's port cannot be used"
                        )
        with self.log_path.open("wb") as log:
            env = self._env(self.server, device_env)
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def ready(self, *, server_name: str = "localhost") -> bool:
        """One readiness probe on the pod's port; over HTTPS the certificate is verified against
        the mounted one for ``server_name`` (a name it covers: the Service's DNS name for an
        operator-made certificate)."""
        assert self.process is not None and self.process.poll() is None, self.log_tail()
        probe = self.server["readinessProbe"]["httpGet"]
        connection: http.client.HTTPConnection
        if probe["scheme"] == "HTTPS":
            context = ssl.create_default_context(cafile=str(self.volumes["tls"] / "tls.crt"))
            connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=context)
            try:
                raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                return False  # not listening yet
            try:
                connection.sock = context.wrap_socket(raw, server_hostname=server_name)
            except OSError:
                raw.close()
                return False
        else:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", probe["path"])
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
            self.process = None


def run_pod_locally(tmp_path: Path, *, dra: bool = False) -> None:
    """Build a web service's pod (as the operator would), run it, and score a photo over HTTPS and gRPC."""
    # A package on "the node", registered as an FpgaModel with a file:// source (as on kind).
    node_dir = tmp_path / "node" / "models"
    node_dir.mkdir(parents=True)
    info = tiny_definition(tiny_featurizer(), tiny_classifier()).save(node_dir / "service_def.zip")
    model = model_body(source={"uri": f"file://{info.path}", "sha256": info.sha256})
    fpga = {"mode": "DRA", "deviceModel": "pbs-s10"} if dra else {}
    web = owner(webservice_body(tls={"mode": "SelfSigned"}, fpga=fpga))
    deployment = build_deployment(
        owner=web, spec=FpgaWebserviceSpec.model_validate(web["spec"]),
        model=FpgaModelSpec.model_validate(model["spec"]), config=OperatorConfig(),
    )  # fmt: skip
    template = deployment["spec"]["template"]["spec"]
    keys, tls = build_keys_secret(owner=web), build_tls_secret(owner=web, hosts=["localhost"])
    secrets = {secret["metadata"]["name"]: secret for secret in (keys, tls)}
    pod = LocalPod(template, secrets, tmp_path / "pod", host_port=free_port(), grpc_host_port=free_port())
    device_env = None
    if dra:
        assert template["resourceClaims"] == [{"name": "fpga", "resourceClaimTemplateName": "web-fpga"}]
        assert DEFAULT_RESOURCE_NAME not in pod.server["resources"]["limits"]
        store_dir = tmp_path / "plugin-state"
        devices = DeviceStore(store_dir).create(
            node_name="kind-node", count=1, model=get_device_model("pbs-s10")
        )
        device_env = _prepare_claim(
            tmp_path,
            web=web,
            devices=devices,
            store_dir=store_dir,
            required=info.manifest.device_memory_bytes,
        )
    pod.run_init()
    pod.start_server(device_env=device_env)
    try:
        wait_until(pod.ready, timeout=300, what="the pod's readiness probe")
        cert = pod.volumes["tls"] / "tls.crt"
        primary = json.loads(base64.b64decode(keys["data"]["keys.json"]))[serving.KEYS_PRIMARY]
        photo = encode(skimage.data.chelsea(), "jpeg")
        answer = score(f"https://localhost:{pod.port}", photo, key=primary, cafile=cert)
        assert answer["results"][0]["top5"][0]["label"] in LABELS
        assert answer["deviceSeconds"] > 0
        # The same pod's gRPC port, with the same key and certificate (TF Serving Predict, OIP).
        with PredictionClient.from_url(
            f"grpcs://localhost:{pod.grpc_port}", key=primary, cafile=cert
        ) as client:
            probabilities = client.score_image(photo)
            top = client.classify(photo, k=1)["top"][0]
        assert top["label"] == answer["results"][0]["top5"][0]["label"]
        assert top["index"] == int(probabilities.argmax())
    finally:
        pod.stop()
