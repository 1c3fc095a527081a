"""What a kubelet does with a pod spec, in ``docker`` terms; used by ``container_pods.py``.

Role: ``Docker`` runs containers (host network, a label on each, all removed at the end) and
reads their logs; ``security_options`` turns a container's securityContext, memory limit and env
into ``docker run`` options (and ``check_applied`` reads them back from the engine);
``materialise`` lays Secret, emptyDir and hostPath volumes out as the kubelet does; ``https``
talks TLS to 127.0.0.1 while checking the certificate for a Service's DNS name.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import re
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEADLINE",
    "Docker",
    "Failure",
    "check_applied",
    "free_port",
    "https",
    "materialise",
    "quantity_bytes",
    "security_options",
    "wait_for",
]

DEADLINE = 300.0
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


class Failure(Exception):
    """A step failed; the message carries the container's log."""


def quantity_bytes(value: str) -> int:
    match = re.fullmatch(r"(\d+)([KMGT]i|[kMG])?", value)
    if match is None:
        raise ValueError(f"unsupported quantity {value!r}")
    return int(match.group(1)) * _UNITS.get(match.group(2) or "", 1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Docker:
    """``docker`` commands; remembers every container it started, for logs and removal."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started: dict[str, str] = {}  # name -> id

    async def __call__(self, *args: str, check: bool = True, timeout: float = DEADLINE) -> str:
        process = await asyncio.create_subprocess_exec(
            "docker", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            raise Failure(f"docker {args[0]} did not finish within {timeout:.0f}s") from None
        text = out.decode(errors="replace")
        if check and process.returncode != 0:
            raise Failure(f"docker {' '.join(args[:2])} failed ({process.returncode}): {text[-3000:]}")
        return text

    async def run(self, name: str, image: str, options: Sequence[str], args: Sequence[str]) -> str:
        """Start a detached container (host network, this run's label); its id."""
        label_key, _, label_value = self.label.partition("=")
        run = ["run", "--detach", "--network", "host", "--name", f"{label_value}-{name}"]
        run += ["--label", f"{label_key}={label_value}", *options, image, *args]
        container = (await self(*run)).strip()
        self.started[name] = container
        return container

    async def logs(self, name: str) -> str:
        return await self("logs", "--tail", "200", self.started[name], check=False, timeout=60)

    async def running(self, name: str) -> bool:
        state = await self("inspect", "--format", "{{.State.Running}}", self.started[name], check=False)
        return state.strip() == "true"

    async def exit_code(self, name: str) -> int:
        await self("wait", self.started[name])
        return int((await self("inspect", "--format", "{{.State.ExitCode}}", self.started[name])).strip())

    async def remove_all(self) -> None:
        for container in self.started.values():
            await self("rm", "--force", "--volumes", container, check=False, timeout=120)
        self.started.clear()


def security_options(pod: dict[str, Any], container: dict[str, Any], *, image_user: str) -> list[str]:
    """``docker run`` options for a container's securityContext and memory limit, as a kubelet
    applies them (the container's settings over the pod's)."""
    pod_ctx, ctx = pod.get("securityContext") or {}, container.get("securityContext") or {}
    user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    group = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    uid = str(user) if user is not None else image_user.partition(":")[0]
    if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) and uid in ("0", "root", ""):
        raise Failure(f"container {container['name']}: runAsNonRoot, but it would run as root")
    options = []
    if user is not None:
        options += ["--user", f"{user}:{group if group is not None else 0}"]
    if "fsGroup" in pod_ctx:
        options += ["--group-add", str(pod_ctx["fsGroup"])]
    if ctx.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    for capability in (ctx.get("capabilities") or {}).get("drop", []):
        options += ["--cap-drop", capability]
    if ctx.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    if ctx.get("privileged"):
        raise Failure(f"container {container['name']} asks to be privileged")
    # seccompProfile RuntimeDefault is docker's default profile; nothing to add.
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        options += [
            "--memory",
            str(quantity_bytes(limits["memory"])),
            "--memory-swap",
            str(quantity_bytes(limits["memory"])),
        ]
    for item in container.get("env") or []:
        if "value" in item:
            options += ["--env", f"{item['name']}={item['value']}"]
    return options


async def check_applied(docker: Docker, name: str, options: Sequence[str]) -> None:
    """The engine holds the container to what the options asked (read back with inspect)."""
    host = json.loads(await docker("inspect", "--format", "{{json .HostConfig}}", docker.started[name]))
    if "--read-only" in options and not host["ReadonlyRootfs"]:
        raise Failure(f"{name}: the root filesystem is writable")
    if "--cap-drop" in options and host["CapDrop"] != ["ALL"] and "ALL" not in (host["CapDrop"] or []):
        raise Failure(f"{name}: capabilities not dropped: {host['CapDrop']}")
    if "--memory" in options and host["Memory"] != int(options[list(options).index("--memory") + 1]):
        raise Failure(f"{name}: memory limit {host['Memory']}")


async def wait_for(docker: Docker, name: str, check: Any, what: str, timeout: float = DEADLINE) -> None:
    """Poll ``check`` (sync; run in a thread) until true; fail with ``name``'s log if it exits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(check):
        if not await docker.running(name):
            raise Failure(
                f"{name} exited while waiting for {what}\n---- {name} log\n{await docker.logs(name)}"
            )
        if loop.time() > deadline:
            raise Failure(f"not within {timeout:.0f}s: {what}\n---- {name} log\n{await docker.logs(name)}")
        await asyncio.sleep(1)


def materialise(
    volume: dict[str, Any], secrets: dict[str, dict[str, Any]], into: Path, fs_group: int
) -> Path:
    """A volume as the kubelet lays it out on the node."""
    if "emptyDir" in volume:
        into.mkdir(parents=True)
        into.chmod(0o777)  # the kubelet's emptyDir mode
        return into
    if "hostPath" in volume:
        return Path(volume["hostPath"]["path"])
    if "secret" in volume:
        source = volume["secret"]
        secret = secrets[source["secretName"]]
        into.mkdir(parents=True)
        items = source.get("items") or [{"key": k, "path": k} for k in secret["data"]]
        for item in items:
            path = into / item["path"]
            path.write_bytes(base64.b64decode(secret["data"][item["key"]]))
            with contextlib.suppress(PermissionError):  # chown needs root; the mode stays
                os.chown(path, 0, fs_group)
            path.chmod(source.get("defaultMode", 0o644))
        return into
    raise Failure(f"volume {volume['name']}: type not supported here")


class _Pinned(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 that checks the certificate for the Service's DNS name (SNI too)."""

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def https(host: str, port: int, cafile: Path, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:  # fmt: skip
    connection = _Pinned(host, port, timeout=60, context=ssl.create_default_context(cafile=str(cafile)))
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
