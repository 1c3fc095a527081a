"""Run fpgaserve's roles in real containers as Kubernetes would; the driver of container_e2e.sh.

Role: after ``tests/e2e/container_e2e.sh`` has built the images, this runs (with ``docker run``):
1. the device plugin as its DaemonSet runs it (``--image``: the script passes the slim image, the
   chart's default for the DaemonSet; root, read-only root filesystem, no capabilities,
   the kubelet's device-plugins directory mounted), registering with the device plugin tests'
   ``FakeKubelet`` over the real v1beta1 API; the kubelet then asks it to ``Allocate`` an FPGA;
2. the operator as its Deployment runs it (the operator image, its securityContext and memory limit,
   a kubeconfig for the Kubernetes API emulator of the operator tests, ``tests/operator/cluster.py``),
   told to run web services in ``--image`` (the chart's ``serverImage``; the e2e script passes the
   ``serve-slim`` image, so the TensorFlow-free serving path runs for real); an FpgaModel of a
   package whose stages are all ``host`` or ``fpga`` and an FpgaWebservice are created there and the
   operator generates the Deployment and the Secrets;
3. that Deployment's pod as a kubelet runs it: Secret and emptyDir (and hostPath) volumes, the init
   container to completion, then the server with the Allocate answer as env and mounts, every
   container under its securityContext and memory limit; once its readiness probe passes, a real
   photo is scored over the pod's TLS (checked against the generated certificate and its DNS name)
   with the generated key.
Every container carries ``--label``; all are removed at the end, and a failure prints the logs.
Host networking only (loopback): the pod's and the operator's ports are moved to free ones.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import re
import socket
import sys
import tempfile
import zipfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the tests package (cluster emulator, fake kubelet, tiny model)

import kmock  # noqa: E402
import skimage.data  # noqa: E402
from cryptography import x509  # noqa: E402

from fpgaserve.api import serving  # noqa: E402
from fpgaserve.api.crd_models import API_VERSION  # noqa: E402
from fpgaserve.api.manifest import parse_manifest  # noqa: E402
from fpgaserve.deviceplugin.daemonset import DEFAULT_SOCKET_DIR, build_daemonset  # noqa: E402
from fpgaserve.deviceplugin.v1beta1 import api_pb2  # noqa: E402
from fpgaserve.operator.install_objects import build_manifest  # noqa: E402
from fpgaserve.sdk.host_lowering import register_classifier  # noqa: E402
from tests.deviceplugin.conftest import FakeKubelet  # noqa: E402
from tests.e2e.kubelet_docker import (  # noqa: E402
    Docker,
    Failure,
    check_applied,
    free_port,
    https,
    materialise,
    security_options,
    wait_for,
)
from tests.operator.cluster import Cluster, declare_resources  # noqa: E402
from tests.operator.helpers import NAMESPACE, model_body, webservice_body  # noqa: E402
from tests.runtime.tiny import LABELS, encode, tiny_classifier, tiny_definition, tiny_featurizer  # noqa: E402

NODE_NAME = "e2e-node"
NAME = "web"


# ---- 1. the device plugin and the kubelet


async def run_device_plugin(docker: Docker, image: str, node_dir: Path) -> tuple[FakeKubelet, Any]:
    """The plugin's DaemonSet pod against a fake kubelet; returns the kubelet and one Allocate answer."""
    socket_dir = node_dir / "device-plugins"  # this node's stand-in for the kubelet's directory
    socket_dir.mkdir(parents=True)
    kubelet = FakeKubelet(socket_dir)
    kubelet.start()
    daemonset = build_daemonset(image=image, device_count=2)
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (volume,) = pod["volumes"]
    (mount,) = container["volumeMounts"]
    assert volume["hostPath"]["path"] == DEFAULT_SOCKET_DIR == mount["mountPath"]
    options = security_options(pod, container, image_user="10001")
    options += ["--env", f"NODE_NAME={NODE_NAME}", "--volume", f"{socket_dir}:{mount['mountPath']}"]
    command = container["command"]
    await docker.run("device-plugin", image, ["--entrypoint", command[0], *options], command[1:])
    await check_applied(docker, "device-plugin", options)
    try:
        await asyncio.to_thread(kubelet.wait_for_registrations, 1)
        await asyncio.to_thread(
            kubelet.wait_for, lambda: bool(kubelet.updates) and len(kubelet.updates[-1]) == 2,
            what="two healthy devices", timeout=120,
        )  # fmt: skip
    except AssertionError as exc:
        raise Failure(f"{exc}\n---- device plugin log\n{await docker.logs('device-plugin')}") from None
    devices = kubelet.updates[-1]
    assert set(devices.values()) == {"Healthy"}, devices
    request = api_pb2.AllocateRequest(
        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=[sorted(devices)[0]])]
    )
    answer = await asyncio.to_thread(kubelet.plugin().Allocate, request, timeout=60)
    print(
        f"device plugin: registered {sorted(devices)}; Allocate gave {len(answer.container_responses[0].mounts)} mount(s)"
    )
    return kubelet, answer.container_responses[0]


# ---- 2. the operator and the API emulator


def host_only_package(path: Path) -> Any:
    """The tiny pipeline, saved so that no stage needs TensorFlow to serve (the slim image has none).

    Its classifier is registered as a dense classifier fpgaserve built (as the zoo's are), so that
    the SDK lowers it to its host form; the manifest is checked, so a change in what is lowered
    fails here rather than as a refused package inside the container."""
    classifier = tiny_classifier()
    register_classifier(classifier)
    info = tiny_definition(tiny_featurizer(), classifier).save(path)
    with zipfile.ZipFile(path) as package:
        manifest = parse_manifest(package.read("manifest.json"))
    runtimes = {s.name: "fpga" if s.kind == "fpga" else s.runtime for s in manifest.pipeline}
    if set(runtimes.values()) - {"host", "fpga"}:
        raise Failure(f"the e2e package needs TensorFlow somewhere: {runtimes}")
    return info


@contextlib.asynccontextmanager
async def api_server() -> AsyncIterator[Cluster]:
    async with Cluster() as emulator, kmock.Server(emulator):
        declare_resources(emulator)
        yield emulator


async def run_operator(
    docker: Docker, *, image: str, operator_image: str, cluster: Cluster, work: Path
) -> None:
    objects = build_manifest(image=image, operator_image=operator_image, watch_namespaces=[NAMESPACE])
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == operator_image
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": str(cluster.url).rstrip("/")}}],
                "users": [{"name": "operator", "user": {"token": "operator-e2e"}}],
                "contexts": [{"name": "e2e", "context": {"cluster": "emulator", "user": "operator"}}],
                "current-context": "e2e",
            }
        )
    )
    kubeconfig.chmod(0o644)
    # Host networking: kopf's liveness endpoint on a free port instead of the manifest's.
    liveness = free_port()
    args = [re.sub(r":\d+/healthz$", f":{liveness}/healthz", a) for a in container["args"]]
    args += ["--resync-seconds=2", "--retry-seconds=1"]
    options = security_options(pod, container, image_user="10001:10001")
    options += ["--volume", f"{kubeconfig}:/kube/config:ro", "--env", "KUBECONFIG=/kube/config"]
    command = container["command"]
    await docker.run(
        "operator", operator_image, ["--entrypoint", command[0], *options], [*command[1:], *args]
    )
    await check_applied(docker, "operator", options)

    def alive() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", liveness), timeout=2) as s:
            s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.0 200") or s.recv(64).startswith(b"HTTP/1.1 200")
        return False

    await wait_for(docker, "operator", lambda: alive(), "the operator's liveness probe")


# ---- 3. the web service's pod


async def run_pod(docker: Docker, *, cluster: Cluster, allocation: Any, node_dir: Path, work: Path) -> None:
    deployment = cluster.live("apps/v1/deployments", NAMESPACE, NAME)
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    secrets: dict[str, dict[str, Any]] = {}
    for volume in pod["volumes"]:
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            live = cluster.live("v1/secrets", NAMESPACE, name)
            if live is None:
                raise Failure(f"the pod needs Secret {name}, which the operator did not create")
            secrets[name] = live
    fs_group = int(pod["securityContext"]["fsGroup"])
    volumes = {
        v["name"]: materialise(v, secrets, work / "volumes" / v["name"], fs_group) for v in pod["volumes"]
    }

    def mounts(container: dict[str, Any]) -> list[str]:
        out = []
        for m in container.get("volumeMounts") or []:
            out += ["--volume", f"{volumes[m['name']]}:{m['mountPath']}{':ro' if m.get('readOnly') else ''}"]
        return out

    for init in pod["initContainers"]:  # in order, each to completion
        options = [*security_options(pod, init, image_user="10001:10001"), *mounts(init)]
        await docker.run(init["name"], init["image"], options, init["args"])
        await check_applied(docker, init["name"], options)
        if await docker.exit_code(init["name"]) != 0:
            raise Failure(
                f"init container {init['name']} failed\n---- log\n{await docker.logs(init['name'])}"
            )
        print(f"pod: init container {init['name']} done")

    (server,) = pod["containers"]
    port = free_port()  # host networking: the pod's port moves to a free one
    args = list(server["args"])
    args[args.index("--port") + 1] = str(port)
    options = [*security_options(pod, server, image_user="10001:10001"), *mounts(server)]
    # The device plugin's Allocate answer, as the kubelet applies it (its directory on this node
    # is node_dir/device-plugins, the stand-in for the kubelet's own).
    for key, value in allocation.envs.items():
        options += ["--env", f"{key}={value}"]
    for mount in allocation.mounts:
        host = mount.host_path.replace(DEFAULT_SOCKET_DIR, str(node_dir / "device-plugins"), 1)
        options += ["--volume", f"{host}:{mount.container_path}{':ro' if mount.read_only else ''}"]
    for device in allocation.devices:
        options += ["--device", f"{device.host_path}:{device.container_path}:{device.permissions}"]
    await docker.run(server["name"], server["image"], options, args)
    await check_applied(docker, server["name"], options)

    cert = volumes["tls"] / "tls.crt"
    names = (
        x509.load_pem_x509_certificate(cert.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value.get_values_for_type(x509.DNSName)
    )
    host = f"{NAME}.{NAMESPACE}.svc"
    assert host in names, names
    probe = server["readinessProbe"]["httpGet"]

    def ready() -> bool:
        try:
            return https(host, port, cert, "GET", probe["path"])[0] == 200
        except OSError:
            return False

    await wait_for(docker, server["name"], ready, "the pod's readiness probe")
    keys = json.loads(base64.b64decode(secrets[f"{NAME}-keys"]["data"]["keys.json"]))
    photo = encode(skimage.data.chelsea(), "jpeg")
    headers = {"Content-Type": "application/octet-stream"}
    status, body = await asyncio.to_thread(
        https,
        host,
        port,
        cert,
        "POST",
        "/score",
        photo,
        {**headers, "Authorization": f"Bearer {keys[serving.KEYS_PRIMARY]}"},
    )
    if status != 200:
        raise Failure(
            f"scoring answered {status}: {body[:500]!r}\n---- server log\n{await docker.logs(server['name'])}"
        )
    answer = json.loads(body)
    top = answer["results"][0]["top5"][0]
    assert top["label"] in LABELS, top
    assert answer["deviceSeconds"] > 0, answer
    status, _ = await asyncio.to_thread(
        https, host, port, cert, "POST", "/score", photo, {**headers, "Authorization": "Bearer not-the-key"}
    )
    assert status == 401, f"a wrong key got {status}"
    user = (await docker("exec", docker.started[server["name"]], "id", "-u")).strip()
    assert user == str(pod["securityContext"]["runAsUser"]), user
    print(
        f"pod: scored chelsea over TLS as {host}: {top['label']} ({top['probability']:.2f}); a wrong key gets 401"
    )


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image", required=True, help="the device plugin's and the web services' (the operator's --image)"
    )
    parser.add_argument("--operator-image", required=True)
    parser.add_argument("--label", default="fpgaserve-e2e=manual", help="KEY=VALUE on every container")
    args = parser.parse_args(argv)
    docker = Docker(args.label)
    kubelet = None
    with tempfile.TemporaryDirectory(prefix="fpe2e-", dir="/tmp") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        node_dir = work / "node"
        try:
            kubelet, allocation = await run_device_plugin(docker, args.image, node_dir)
            async with api_server() as cluster:
                server_image = args.image
                await run_operator(
                    docker, image=server_image, operator_image=args.operator_image, cluster=cluster, work=work
                )
                models = node_dir / "models"
                models.mkdir(parents=True)
                info = await asyncio.to_thread(host_only_package, models / "service_def.zip")
                models.chmod(0o755)
                model = model_body(source={"uri": f"file://{info.path}", "sha256": info.sha256})
                web = webservice_body(NAME, tls={"mode": "SelfSigned"}, fpga={"count": 1},
                                      resources={"cpu": "500m", "memory": "2Gi"})  # fmt: skip
                for body, plural in ((model, "fpgamodels"), (web, "fpgawebservices")):
                    response = await cluster.post(
                        f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/{plural}", json=body
                    )
                    assert response.status == 200, await response.text()

                def generated() -> bool:
                    return all(
                        cluster.live(resource, NAMESPACE, name) is not None
                        for resource, name in (
                            ("apps/v1/deployments", NAME),
                            ("v1/secrets", f"{NAME}-keys"),
                            ("v1/secrets", f"{NAME}-tls"),
                        )
                    )

                await wait_for(
                    docker, "operator", generated, "the operator to generate the Deployment and Secrets"
                )
                deployment = cluster.live("apps/v1/deployments", NAMESPACE, NAME) or {}
                images = {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
                assert images == {server_image}, f"the pod runs {images}, not the operator's --image"
                print(
                    f"operator: generated the Deployment ({server_image}) and the Secrets of the web service"
                )
                await run_pod(docker, cluster=cluster, allocation=allocation, node_dir=node_dir, work=work)
        except (Failure, AssertionError) as exc:
            print(f"FAIL: {exc}", file=sys.stderr)
            return 1
        finally:
            await docker.remove_all()
            if kubelet is not None:
                kubelet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
