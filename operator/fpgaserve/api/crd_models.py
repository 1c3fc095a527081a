"""The FpgaModel and FpgaWebservice custom resources as pydantic models.

Role: the one definition of both CRDs. ``fpgaserve.api.crdgen`` turns these models into the YAML
under ``crds/`` (and the reference in ``docs/crds.md``); the operator parses every object it
handles with them, so the schema the API server enforces and the one the operator reads are the
same. Field names are camelCase on the wire and snake_case in Python.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from fpgaserve.api.constants import DEFAULT_RESOURCE_NAME, DRA_DEVICE_CLASS
from fpgaserve.api.crd_fields import (
    DNS_LABEL,
    RESOURCE_NAME,
    SHA256,
    SOURCE_URI,
    CrdModel,
    LabelName,
    Quantity,
    SubdomainName,
    cel_rule,
    empty_object_default,
)
from fpgaserve.api.serving import IMAGE_PIXELS_CEILING

__all__ = [
    "API_VERSION",
    "GROUP",
    "MODEL_KIND",
    "MODEL_PLURAL",
    "REGENERATE_KEY_ANNOTATION",
    "VERSION",
    "WEBSERVICE_KIND",
    "WEBSERVICE_PLURAL",
    "AuthSpec",
    "AutoscaleSpec",
    "BatchingSpec",
    "Condition",
    "FpgaModelSpec",
    "FpgaModelStatus",
    "FpgaSpec",
    "FpgaWebserviceSpec",
    "FpgaWebserviceStatus",
    "GrpcSpec",
    "IngressGrpcSpec",
    "IngressSpec",
    "IngressTlsSpec",
    "ModelSource",
    "PipelineStage",
    "ResourcesSpec",
    "SecretReference",
    "ServerSpec",
    "TlsSpec",
]

GROUP = "fpgaserve.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
MODEL_KIND = "FpgaModel"
MODEL_PLURAL = "fpgamodels"
WEBSERVICE_KIND = "FpgaWebservice"
WEBSERVICE_PLURAL = "fpgawebservices"

# Set to "primary" or "secondary" on an FpgaWebservice: the operator replaces that key in the keys
# Secret, then removes the annotation.
REGENERATE_KEY_ANNOTATION = f"{GROUP}/regenerate-key"

# ---------------------------------------------------------------------------------------- FpgaModel


class SecretReference(CrdModel):
    """A Secret in the same namespace."""

    name: SubdomainName = Field(description="Name of the Secret.")


class ModelSource(CrdModel):
    """Where the service package (service_def.zip) lives, and its digest."""

    model_config = ConfigDict(
        json_schema_extra=cel_rule(
            "!has(self.endpoint) || self.uri.startsWith('s3://')",
            "source.endpoint applies to s3:// URIs only",
        )
    )

    uri: str = Field(
        pattern=SOURCE_URI,
        max_length=2048,
        description=(
            "https://, http://, s3://bucket/key, pvc://claim/path/in/claim, or file:///path/on/node "
            "(single-node clusters such as kind)."
        ),
    )
    sha256: str = Field(pattern=SHA256, description="Lower-case hex SHA-256 of the package file.")
    secret_ref: SecretReference | None = Field(
        default=None,
        description="Credentials for the download, mounted for storage-init (e.g. S3 access keys).",
    )
    endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        max_length=2048,
        description="S3-compatible endpoint (MinIO and others); s3:// only.",
    )

    @model_validator(mode="after")
    def _endpoint_only_for_s3(self) -> ModelSource:
        if self.endpoint is not None and not self.uri.startswith("s3://"):
            raise ValueError("source.endpoint applies to s3:// URIs only")
        return self

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]


class FpgaModelSpec(CrdModel):
    """A registered service package: a pipeline ready to deploy."""

    source: ModelSource
    description: str = Field(default="", max_length=1024, description="Free text.")
    tags: dict[str, str] = Field(default_factory=dict, description="Free key/value labels.")


class Condition(CrdModel):
    """A Kubernetes-style condition."""

    type: str = Field(description="What the condition is about.")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", description="CamelCase reason of the last transition.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"})
    observed_generation: int | None = None


class PipelineStage(CrdModel):
    """One stage of the package's pipeline, as its manifest declares it."""

    name: str
    kind: str
    device_memory_bytes: int | None = None


class FpgaModelStatus(CrdModel):
    """What the operator found out about an FpgaModel."""

    phase: Literal["Pending", "Ready", "Failed", "Terminating"] | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    digest: str | None = Field(default=None, description="sha256:<hex> of the package.")
    size_bytes: int | None = Field(default=None, description="Package size, when the source is reachable.")
    pipeline: list[PipelineStage] = Field(default_factory=list, description="Stages, from the manifest.")
    device_memory_bytes: int | None = Field(default=None, description="Device memory the pipeline needs.")
    used_by: list[str] = Field(default_factory=list, description="FpgaWebservices deploying this model.")


# ----------------------------------------------------------------------------------- FpgaWebservice


class AutoscaleSpec(CrdModel):
    """Horizontal autoscaling on CPU utilisation (a HorizontalPodAutoscaler)."""

    model_config = ConfigDict(
        json_schema_extra=cel_rule(
            "self.minReplicas <= self.maxReplicas",
            "autoscale.minReplicas must not exceed autoscale.maxReplicas",
        )
    )

    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(default=3, ge=1, le=1000)
    target_utilization: int = Field(default=70, ge=1, le=100, description="Target CPU utilisation, percent.")

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscaleSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscale.minReplicas must not exceed autoscale.maxReplicas")
        return self


class FpgaSpec(CrdModel):
    """FPGAs per replica: counted as an extended resource (the device plugin, the default), or
    claimed through Dynamic Resource Allocation by what they are (model, weight memory)."""

    model_config = ConfigDict(
        json_schema_extra=cel_rule(
            "self.mode == 'DRA' || !has(self.deviceModel)",
            "fpga.deviceModel applies to mode DRA only",
        )
    )

    count: int = Field(default=1, ge=0, le=16, description="FPGAs per replica; 0 runs on the CPU alone.")
    mode: Literal["DevicePlugin", "DRA"] = Field(
        default="DevicePlugin",
        description=(
            "DevicePlugin: request resourceName as an extended resource. DRA: a ResourceClaimTemplate "
            "asks the DRA driver for devices with at least the package's weight memory (and of deviceModel)."
        ),
    )
    resource_name: str = Field(
        default=DEFAULT_RESOURCE_NAME, pattern=RESOURCE_NAME, max_length=253, description="Mode DevicePlugin."
    )
    device_model: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
        description="Mode DRA: only devices of this model (e.g. pbs-s10); default: any model.",
    )
    device_class_name: SubdomainName = Field(
        default=DRA_DEVICE_CLASS, description="Mode DRA: the DeviceClass of the fpgaserve DRA driver."
    )

    @model_validator(mode="after")
    def _device_model_for_dra(self) -> FpgaSpec:
        if self.device_model is not None and self.mode != "DRA":
            raise ValueError("fpga.deviceModel applies to mode DRA only")
        return self


class ResourcesSpec(CrdModel):
    """CPU and memory of the server container (requests; limits default to no CPU limit and
    memory limit = memory request)."""

    cpu: Quantity = "1"
    memory: Quantity = "2Gi"
    cpu_limit: Quantity | None = None
    memory_limit: Quantity | None = None


class AuthSpec(CrdModel):
    """Key authentication: a primary and a secondary key, generated into a Secret."""

    enabled: bool = True


class TlsSpec(CrdModel):
    """TLS on the server itself."""

    model_config = ConfigDict(
        json_schema_extra=cel_rule(
            "(self.mode == 'Secret') == has(self.secretName)",
            "tls.secretName is required with mode Secret and only then",
        )
    )

    mode: Literal["Disabled", "SelfSigned", "Secret"] = Field(
        default="Disabled",
        description="SelfSigned: the operator generates a certificate; Secret: use secretName.",
    )
    secret_name: SubdomainName | None = Field(
        default=None, description="A kubernetes.io/tls Secret (mode Secret)."
    )

    @model_validator(mode="after")
    def _secret_name_for_secret_mode(self) -> TlsSpec:
        if (self.mode == "Secret") != (self.secret_name is not None):
            raise ValueError("tls.secretName is required with mode Secret and only then")
        return self

    @property
    def enabled(self) -> bool:
        return self.mode != "Disabled"


class IngressTlsSpec(CrdModel):
    """TLS at the ingress: a certificate Secret, optionally issued by cert-manager."""

    secret_name: SubdomainName | None = Field(default=None, description="Default: <name>-ingress-tls.")
    cluster_issuer: SubdomainName | None = Field(default=None, description="cert-manager ClusterIssuer.")
    issuer: SubdomainName | None = Field(default=None, description="cert-manager Issuer.")


class IngressGrpcSpec(CrdModel):
    """gRPC through an Ingress of its own (<name>-grpc), whose backend protocol is gRPC."""

    host: SubdomainName | None = Field(
        default=None,
        description="A host of its own for gRPC (path /). Default: the Ingress's host, where the "
        "gRPC services' paths (/inference.GRPCInferenceService, /tensorflow.serving.PredictionService, "
        "/grpc.health.v1.Health) go to the gRPC port and everything else stays HTTP.",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations of the gRPC Ingress (default: the backend protocol annotation "
        "nginx.ingress.kubernetes.io/backend-protocol: GRPC, or GRPCS with TLS).",
    )


class IngressSpec(CrdModel):
    """An Ingress in front of the Service."""

    host: SubdomainName
    class_name: SubdomainName | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    path: str = Field(default="/", pattern=r"^/\S*$", max_length=1024)
    tls: IngressTlsSpec | None = None
    grpc: IngressGrpcSpec | None = Field(
        default=None,
        description="Also route gRPC (needs spec.grpc.enabled); the HTTP routes stay as they are.",
    )


class GrpcSpec(CrdModel):
    """The server's gRPC port: OIP v2 gRPC, TF Serving's PredictionService and gRPC health."""

    enabled: bool = Field(
        default=True, description="Listen for gRPC, and expose it on the Service as port grpc."
    )


class BatchingSpec(CrdModel):
    """Dynamic batching in the server."""

    max_batch_size: int = Field(default=8, ge=1, le=1024)
    max_batch_delay_ms: int = Field(default=5, ge=0, le=10000)
    max_queue: int = Field(default=256, ge=1, le=100000)


class ServerSpec(CrdModel):
    """Request limits of the server."""

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024**3)
    max_image_pixels: int = Field(
        default=4096 * 4096,
        ge=1,
        le=IMAGE_PIXELS_CEILING,
        description="Largest image (width x height, read from its header before decoding); "
        "larger ones get 400. Bounds the memory one image takes (about 15 bytes per pixel).",
    )
    request_timeout_seconds: int = Field(default=30, ge=1, le=3600)
    drain_seconds: int = Field(
        default=5,
        ge=0,
        le=300,
        description="After SIGTERM the server stays unready but serving this long, so that a "
        "rollout drops no request; the pod's grace period covers it.",
    )


class FpgaWebserviceSpec(CrdModel):
    """A deployed FpgaModel: the server, its Service, and optionally an Ingress."""

    model_config = ConfigDict(
        json_schema_extra=cel_rule(
            "!has(self.ingress) || !has(self.ingress.grpc) || !has(self.grpc) || self.grpc.enabled",
            "ingress.grpc routes the gRPC port: it needs grpc.enabled",
        )
    )

    model: LabelName = Field(description="An FpgaModel in the same namespace.")
    replicas: int = Field(default=1, ge=0, le=1000, description="Ignored when autoscale is set.")
    autoscale: AutoscaleSpec | None = None
    fpga: FpgaSpec = Field(default_factory=FpgaSpec, json_schema_extra=empty_object_default())
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, json_schema_extra=empty_object_default())
    auth: AuthSpec = Field(default_factory=AuthSpec, json_schema_extra=empty_object_default())
    tls: TlsSpec = Field(default_factory=TlsSpec, json_schema_extra=empty_object_default())
    ingress: IngressSpec | None = None
    grpc: GrpcSpec = Field(default_factory=GrpcSpec, json_schema_extra=empty_object_default())
    batching: BatchingSpec = Field(default_factory=BatchingSpec, json_schema_extra=empty_object_default())
    server: ServerSpec = Field(default_factory=ServerSpec, json_schema_extra=empty_object_default())
    image: str | None = Field(default=None, max_length=512, description="Default: the operator's --image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None

    @model_validator(mode="after")
    def _grpc_ingress_needs_grpc(self) -> FpgaWebserviceSpec:
        if self.ingress is not None and self.ingress.grpc is not None and not self.grpc.enabled:
            raise ValueError("ingress.grpc routes the gRPC port: it needs grpc.enabled")
        return self

    @property
    def min_replicas(self) -> int:
        """The fewest replicas the service runs with (for the disruption budget)."""
        return self.autoscale.min_replicas if self.autoscale is not None else self.replicas


class FpgaWebserviceStatus(CrdModel):
    """What the operator made and how it is doing."""

    phase: Literal["Pending", "Deploying", "Ready", "Failed"] | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    url: str | None = Field(default=None, description="Through the Ingress.")
    internal_url: str | None = Field(default=None, description="Through the Service, in the cluster.")
    keys_secret: str | None = Field(default=None, description="The Secret holding keys.json.")
    model_digest: str | None = Field(default=None, description="sha256:<hex> of the deployed package.")
