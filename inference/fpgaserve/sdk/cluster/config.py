"""Image and deployment configurations under Azure ML's names, mapped onto ``FpgaWebserviceSpec``.

Role: ``BrainwaveImage.image_configuration``, ``BrainwaveWebservice.deploy_configuration`` and
``AksWebservice.deploy_configuration`` return these; ``Webservice.deploy_from_model`` turns them
into the FpgaWebservice spec through the pydantic CRD model (a bad value fails here, with the
model's message, before anything is sent to the cluster).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fpgaserve.api.crd_models import FpgaWebserviceSpec
from fpgaserve.sdk.exceptions import WebserviceException

__all__ = ["DeploymentConfiguration", "ImageConfiguration", "build_spec"]


@dataclass(frozen=True)
class ImageConfiguration:
    """The server image (default: the operator's) and its pull policy."""

    image: str | None = None
    image_pull_policy: str | None = None


@dataclass(frozen=True)
class DeploymentConfiguration:
    """Replicas, autoscale, FPGAs, TLS (off, self-signed or your PEMs), auth and an ingress host."""

    num_replicas: int = 1
    autoscale_enabled: bool = False
    autoscale_min_replicas: int = 1
    autoscale_max_replicas: int = 3
    autoscale_target_utilization: int = 70
    fpga_count: int = 1
    ssl_enabled: bool = True
    ssl_cert_pem_file: str | None = None
    ssl_key_pem_file: str | None = None
    auth_enabled: bool = True
    ingress_host: str | None = None
    cpu_cores: float | None = None
    memory_gb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def own_certificate(self) -> bool:
        if (self.ssl_cert_pem_file is None) != (self.ssl_key_pem_file is None):
            raise WebserviceException("give both ssl_cert_pem_file and ssl_key_pem_file, or neither")
        return self.ssl_enabled and self.ssl_cert_pem_file is not None

    def pems(self) -> tuple[bytes, bytes]:
        assert self.ssl_cert_pem_file is not None and self.ssl_key_pem_file is not None
        return Path(self.ssl_cert_pem_file).read_bytes(), Path(self.ssl_key_pem_file).read_bytes()


def _quantity(value: float, unit: str = "") -> str:
    return f"{value:g}{unit}" if unit == "" else f"{round(value * 1024)}Mi"


def build_spec(
    *,
    model: str,
    image: ImageConfiguration | None,
    deployment: DeploymentConfiguration,
    tls_secret: str | None,
) -> dict[str, Any]:
    """The FpgaWebservice spec (wire form), validated by ``FpgaWebserviceSpec``."""
    spec: dict[str, Any] = {
        "model": model,
        "replicas": deployment.num_replicas,
        "fpga": {"count": deployment.fpga_count},
        "auth": {"enabled": deployment.auth_enabled},
        "tls": {"mode": "Disabled"},
    }
    if deployment.ssl_enabled:
        spec["tls"] = {"mode": "Secret", "secretName": tls_secret} if tls_secret else {"mode": "SelfSigned"}
    if deployment.autoscale_enabled:
        spec["autoscale"] = {
            "minReplicas": deployment.autoscale_min_replicas,
            "maxReplicas": deployment.autoscale_max_replicas,
            "targetUtilization": deployment.autoscale_target_utilization,
        }
    if deployment.ingress_host:
        spec["ingress"] = {"host": deployment.ingress_host}
    resources = {}
    if deployment.cpu_cores is not None:
        resources["cpu"] = _quantity(deployment.cpu_cores)
    if deployment.memory_gb is not None:
        resources["memory"] = _quantity(deployment.memory_gb, "Mi")
    if resources:
        spec["resources"] = resources
    if image is not None and image.image:
        spec["image"] = image.image
    if image is not None and image.image_pull_policy:
        spec["imagePullPolicy"] = image.image_pull_policy
    spec.update(deployment.extra)
    try:
        parsed = FpgaWebserviceSpec.model_validate(spec)
    except ValidationError as exc:
        raise WebserviceException(f"invalid deployment configuration: {exc}") from None
    return parsed.model_dump(mode="json", by_alias=True, exclude_none=True)
