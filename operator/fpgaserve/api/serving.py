"""The contract between the operator's pod template and the inference server's command line.

Role: dependency-free constants (and the two argv builders over them) both sides import, so that
a path, a flag or a port can never disagree: the operator builds containers from these,
``fpgaserve serve`` and ``fpgaserve storage-init`` parse them. A test runs a generated pod template
locally to prove it.
"""

from __future__ import annotations

__all__ = [
    "CREDENTIALS_DIR",
    "GRPC_PORT",
    "GRPC_SERVICES",
    "HTTPS_PORT",
    "HTTP_PORT",
    "IMAGE_PIXELS_CEILING",
    "KEYS_DIR",
    "KEYS_FILE",
    "KEYS_PRIMARY",
    "KEYS_SECONDARY",
    "LIVENESS_PATH",
    "METRICS_PATH",
    "MODEL_DIR",
    "PACKAGE_FILENAME",
    "READINESS_PATH",
    "SOURCE_DIR",
    "SOURCE_URI_ENV",
    "SOURCE_URI_KEY",
    "TERMINATION_LOG",
    "TLS_CERT_FILE",
    "TLS_DIR",
    "TLS_KEY_FILE",
    "serve_argv",
    "storage_init_argv",
]

# The server listens on one port: plain HTTP, or HTTPS when given a certificate and key.
HTTP_PORT = 8080
HTTPS_PORT = 8443
# The gRPC port (OIP v2 gRPC, TF Serving's PredictionService, gRPC health): TLS when HTTP has it.
GRPC_PORT = 8081
# Its services, as the path prefixes an Ingress routes to it (/<service>/<method>).
GRPC_SERVICES = (
    "inference.GRPCInferenceService",
    "tensorflow.serving.PredictionService",
    "grpc.health.v1.Health",
)

# storage-init unpacks the verified package here (an emptyDir shared with the server container).
MODEL_DIR = "/mnt/models"
PACKAGE_FILENAME = "service_def.zip"

# Secrets mounted into the server container.
KEYS_DIR = "/var/run/fpgaserve/keys"
KEYS_FILE = f"{KEYS_DIR}/keys.json"  # {"primaryKey": "...", "secondaryKey": "..."}
KEYS_PRIMARY = "primaryKey"
KEYS_SECONDARY = "secondaryKey"
TLS_DIR = "/var/run/fpgaserve/tls"
TLS_CERT_FILE = f"{TLS_DIR}/tls.crt"
TLS_KEY_FILE = f"{TLS_DIR}/tls.key"

# Command lines (argv after the image's entrypoint "fpgaserve"):
#   storage-init [--uri URI] --sha256 HEX --dest MODEL_DIR [--termination-log FILE]
#                [--credentials-dir DIR] [--endpoint URL]
#   (without --uri, the URI is read from the environment variable SOURCE_URI_ENV, which the pod
#   fills from a Secret: a presigned URL's query is a credential and must not sit in the argv)
#   serve MODEL_DIR --host 0.0.0.0 --port PORT [--grpc-port GRPC_PORT]
#         [--tls-cert TLS_CERT_FILE --tls-key TLS_KEY_FILE]
#         [--keys-file KEYS_FILE] [--max-batch-size N] [--max-batch-delay-ms MS] [--max-queue N]
#         [--max-body-bytes N] [--max-image-pixels N] [--request-timeout-s S]
#         [--header-timeout-s S] [--max-connections N] [--drain-s S] [--shutdown-timeout-s S]

# The largest --max-image-pixels: Pillow, which reads image headers, refuses images over twice its
# MAX_IMAGE_PIXELS (89,478,485) as decompression bombs before any limit of ours is checked.
IMAGE_PIXELS_CEILING = 2 * 89_478_485

# Where a container writes why it failed (the kubelet's default terminationMessagePath); the pod
# template sets terminationMessagePolicy FallbackToLogsOnError, and the operator reports it.
TERMINATION_LOG = "/dev/termination-log"

# Probes and metrics (open without a key).
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
METRICS_PATH = "/metrics"

# storage-init's --credentials-dir: the FpgaModel's source Secret, one file per key.
CREDENTIALS_DIR = "/var/run/fpgaserve/credentials"
# A source URI that carries a credential reaches storage-init through this variable, from the key
# SOURCE_URI_KEY of a Secret, instead of its argv (which anyone who reads Deployments can read).
SOURCE_URI_ENV = "FPGASERVE_SOURCE_URI"
SOURCE_URI_KEY = "uri"
# pvc:// and file:// sources are mounted read-only here and handed to storage-init as file:// URIs.
SOURCE_DIR = "/mnt/source"


def storage_init_argv(
    *,
    uri: str | None,
    sha256: str,
    dest: str = MODEL_DIR,
    credentials_dir: str | None = None,
    endpoint: str | None = None,
    termination_log: str | None = None,
) -> list[str]:
    """``storage-init`` argv (after the entrypoint), exactly as the comment above spells it; ``uri``
    None: read from ``SOURCE_URI_ENV``."""
    argv = ["storage-init"]
    if uri is not None:
        argv += ["--uri", uri]
    argv += ["--sha256", sha256, "--dest", dest]
    if termination_log is not None:
        argv += ["--termination-log", termination_log]
    if credentials_dir is not None:
        argv += ["--credentials-dir", credentials_dir]
    if endpoint is not None:
        argv += ["--endpoint", endpoint]
    return argv


def serve_argv(
    *,
    model_dir: str = MODEL_DIR,
    port: int,
    grpc_port: int | None = None,
    tls: bool = False,
    keys: bool = False,
    max_batch_size: int | None = None,
    max_batch_delay_ms: float | None = None,
    max_queue: int | None = None,
    max_body_bytes: int | None = None,
    max_image_pixels: int | None = None,
    request_timeout_s: float | None = None,
    header_timeout_s: float | None = None,
    max_connections: int | None = None,
    drain_s: float | None = None,
    shutdown_timeout_s: float | None = None,
) -> list[str]:
    """``serve`` argv (after the entrypoint); TLS and keys use the mount paths above."""
    argv = ["serve", model_dir, "--host", "0.0.0.0", "--port", str(port)]
    if grpc_port is not None:
        argv += ["--grpc-port", str(grpc_port)]
    if tls:
        argv += ["--tls-cert", TLS_CERT_FILE, "--tls-key", TLS_KEY_FILE]
    if keys:
        argv += ["--keys-file", KEYS_FILE]
    options: list[tuple[str, float | None]] = [
        ("--max-batch-size", max_batch_size),
        ("--max-batch-delay-ms", max_batch_delay_ms),
        ("--max-queue", max_queue),
        ("--max-body-bytes", max_body_bytes),
        ("--max-image-pixels", max_image_pixels),
        ("--request-timeout-s", request_timeout_s),
        ("--header-timeout-s", header_timeout_s),
        ("--max-connections", max_connections),
        ("--drain-s", drain_s),
        ("--shutdown-timeout-s", shutdown_timeout_s),
    ]
    for flag, value in options:
        if value is not None:
            argv += [flag, _number(value)]
    return argv


def _number(value: float) -> str:
    # "8", not "8.0"; "16777216", not "1.67772e+07" (the :g format rounds to 6 digits).
    return str(int(value)) if float(value).is_integer() else repr(float(value))
