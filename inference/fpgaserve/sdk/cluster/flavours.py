"""Azure ML's deployment flavours: ``BrainwaveImage``, ``BrainwaveWebservice``, ``AksWebservice``.

Role: the static ``image_configuration`` / ``deploy_configuration`` calls the article and the
Brainwave notebooks make, each mapped onto the one ``FpgaWebservice`` spec (``config.py``). The
web-service calls themselves live in ``Webservice`` (``webservice.py``), which these subclass so
that ``BrainwaveWebservice(ws, name)`` works as in Azure ML.
"""

from __future__ import annotations

from fpgaserve.sdk.cluster.config import DeploymentConfiguration, ImageConfiguration
from fpgaserve.sdk.cluster.webservice import Webservice

__all__ = ["AksWebservice", "BrainwaveImage", "BrainwaveWebservice"]


class BrainwaveImage:
    """``BrainwaveImage.image_configuration()``: the server image (default: the operator's)."""

    @staticmethod
    def image_configuration(
        image: str | None = None, image_pull_policy: str | None = None
    ) -> ImageConfiguration:
        return ImageConfiguration(image=image, image_pull_policy=image_pull_policy)


class BrainwaveWebservice(Webservice):
    """``BrainwaveWebservice.deploy_configuration(...)``: an FPGA deployment's settings."""

    @staticmethod
    def deploy_configuration(
        num_replicas: int = 1,
        autoscale_enabled: bool = False,
        autoscale_min_replicas: int = 1,
        autoscale_max_replicas: int = 3,
        autoscale_target_utilization: int = 70,
        fpga_count: int = 1,
        ssl_enabled: bool = True,
        ssl_cert_pem_file: str | None = None,
        ssl_key_pem_file: str | None = None,
        auth_enabled: bool = True,
        ingress_host: str | None = None,
    ) -> DeploymentConfiguration:
        """SSL on by default: self-signed unless both PEM files are given."""
        return DeploymentConfiguration(
            num_replicas=num_replicas, autoscale_enabled=autoscale_enabled,
            autoscale_min_replicas=autoscale_min_replicas, autoscale_max_replicas=autoscale_max_replicas,
            autoscale_target_utilization=autoscale_target_utilization, fpga_count=fpga_count,
            ssl_enabled=ssl_enabled, ssl_cert_pem_file=ssl_cert_pem_file, ssl_key_pem_file=ssl_key_pem_file,
            auth_enabled=auth_enabled, ingress_host=ingress_host,
        )  # fmt: skip


class AksWebservice(Webservice):
    """``AksWebservice.deploy_configuration(...)``: Azure's AKS settings onto the same spec."""

    @staticmethod
    def deploy_configuration(
        autoscale_enabled: bool = False,
        autoscale_min_replicas: int = 1,
        autoscale_max_replicas: int = 3,
        autoscale_target_utilization: int = 70,
        num_replicas: int = 1,
        auth_enabled: bool = True,
        cpu_cores: float | None = None,
        memory_gb: float | None = None,
        ssl_enabled: bool = True,
        ssl_cert_pem_file: str | None = None,
        ssl_key_pem_file: str | None = None,
        ssl_cname: str | None = None,
        fpga_count: int = 1,
    ) -> DeploymentConfiguration:
        """``ssl_cname`` becomes the Ingress host."""
        return DeploymentConfiguration(
            num_replicas=num_replicas, autoscale_enabled=autoscale_enabled,
            autoscale_min_replicas=autoscale_min_replicas, autoscale_max_replicas=autoscale_max_replicas,
            autoscale_target_utilization=autoscale_target_utilization, auth_enabled=auth_enabled,
            cpu_cores=cpu_cores, memory_gb=memory_gb, ssl_enabled=ssl_enabled,
            ssl_cert_pem_file=ssl_cert_pem_file, ssl_key_pem_file=ssl_key_pem_file, ingress_host=ssl_cname,
            fpga_count=fpga_count,
        )  # fmt: skip
