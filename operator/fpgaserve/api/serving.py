"""The contract between the operator's pod template and the inference server's command line.

Role: dependency-free constants both sides import, so that a path, a flag or a port can never
disagree: the operator builds containers from these, ``fpgaserve serve`` and ``fpgaserve
storage-init`` parse them. A test runs a generated pod template locally to prove it.
"""

from __future__ import annotations

__all__ = [
    "HTTPS_PORT",
    "HTTP_PORT",
    "KEYS_DIR",
    "KEYS_FILE",
    "MODEL_DIR",
    "PACKAGE_FILENAME",
    "TLS_CERT_FILE",
    "TLS_DIR",
    "TLS_KEY_FILE",
]

# The server listens on one port: plain HTTP, or HTTPS when given a certificate and key.
HTTP_PORT = 8080
HTTPS_PORT = 8443

# storage-init unpacks the verified package here (an emptyDir shared with the server container).
MODEL_DIR = "/mnt/models"
PACKAGE_FILENAME = "service_def.zip"

# Secrets mounted into the server container.
KEYS_DIR = "/var/run/fpgaserve/keys"
KEYS_FILE = f"{KEYS_DIR}/keys.json"  # {"primaryKey": "...", "secondaryKey": "..."}
TLS_DIR = "/var/run/fpgaserve/tls"
TLS_CERT_FILE = f"{TLS_DIR}/tls.crt"
TLS_KEY_FILE = f"{TLS_DIR}/tls.key"

# Command lines (argv after the image's entrypoint "fpgaserve"):
#   storage-init --uri URI --sha256 HEX --dest MODEL_DIR [--credentials-dir DIR] [--endpoint URL]
#   serve MODEL_DIR --host 0.0.0.0 --port PORT [--tls-cert TLS_CERT_FILE --tls-key TLS_KEY_FILE]
#         [--keys-file KEYS_FILE] [--max-batch-size N] [--max-batch-delay-ms MS] [--max-queue N]
#         [--max-body-bytes N] [--request-timeout-s S]
