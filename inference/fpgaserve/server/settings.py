"""The server's settings: one frozen value, parsed from the command line by ``fpgaserve serve``.

Role: what ``web_app.make_app`` and ``server_main.serve`` take instead of globals. The defaults are
the server's own; the operator passes only the options a FpgaWebservice sets
(``fpgaserve.api.serving.serve_argv``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fpgaserve.api.serving import HTTP_PORT, IMAGE_PIXELS_CEILING

__all__ = ["ServerSettings"]


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Listening address, TLS and keys, batching, limits and timeouts of one server."""

    host: str = "0.0.0.0"
    port: int = HTTP_PORT
    grpc_port: int | None = None  # None: no gRPC port (OIP v2 gRPC, TF Serving Predict, health)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    keys_file: Path | None = None  # None: no key auth (local use only)
    max_batch_size: int = 8
    max_batch_delay_ms: float = 5.0
    max_queue: int = 64  # inputs waiting for a batch, across all requests
    max_body_bytes: int = 16 * 1024 * 1024
    # Pixels per image, read from its header before any decode: 4096x4096. The decode and the
    # preprocessing of one image take ~15 bytes per pixel, so this bounds one image to ~250 MB.
    max_image_pixels: int = 4096 * 4096
    request_timeout_s: float = 30.0
    header_timeout_s: float = 10.0  # a connection must send a request's headers within this
    max_connections: int = 1024  # open connections; more are answered 503 and closed
    # After SIGTERM: readiness turns false and the listener keeps accepting this long, so that the
    # endpoints controller and proxies stop sending before the port closes (a rollout drops nothing).
    drain_s: float = 5.0
    shutdown_timeout_s: float = 10.0  # then how long in-flight requests may finish
    # After a batch, once no input has come for this long, the heap's free pages go back to the
    # kernel (npu.allocator.trim_heap: a burst's activations); 0: never.
    idle_trim_s: float = 5.0
    keys_check_interval_s: float = 1.0  # how often the keys file is checked for a rotation
    tls_check_interval_s: float = 5.0  # how often the TLS files are checked for a rotation

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together: give both or neither")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range 0-65535")
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            raise ValueError(f"gRPC port {self.grpc_port} is out of range 0-65535")
        if self.grpc_port is not None and self.grpc_port != 0 and self.grpc_port == self.port:
            raise ValueError(f"--grpc-port {self.grpc_port} is the HTTP port too: give it a port of its own")
        if self.max_batch_size < 1:
            raise ValueError("max batch size must be at least 1")
        if self.max_batch_delay_ms < 0:
            raise ValueError("max batch delay must be >= 0 ms")
        if self.max_queue < 1:
            raise ValueError("max queue must be at least 1")
        if self.max_body_bytes < 1024:
            raise ValueError("max body bytes must be at least 1024")
        if not 1 <= self.max_image_pixels <= IMAGE_PIXELS_CEILING:
            raise ValueError(f"max image pixels must be between 1 and {IMAGE_PIXELS_CEILING}")
        if self.max_connections < 1:
            raise ValueError("max connections must be at least 1")
        if (
            self.request_timeout_s <= 0
            or self.header_timeout_s <= 0
            or self.drain_s < 0
            or self.shutdown_timeout_s < 0
            or min(self.keys_check_interval_s, self.tls_check_interval_s) < 0
        ):
            raise ValueError("timeouts must be positive (and intervals >= 0)")
        if self.idle_trim_s < 0:
            raise ValueError("--idle-trim-s must be >= 0 seconds (0: never trim)")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None
