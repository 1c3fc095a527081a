"""The kubelet Device Plugin API v1beta1: its proto, the generated gRPC modules and its constants.

``api.proto`` is wire-compatible with the kubelet's definition; ``api_pb2.py``, ``api_pb2.pyi`` and
``api_pb2_grpc.py`` are generated from it by ``python -m fpgaserve.deviceplugin.protogen`` and
committed (never edit them by hand). The constants mirror the kubelet's ``constants.go``.
"""

from __future__ import annotations

__all__ = ["API_VERSION", "DEFAULT_SOCKET_DIR", "HEALTHY", "KUBELET_SOCKET_NAME", "UNHEALTHY"]

API_VERSION = "v1beta1"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
# Where the kubelet serves Registration and expects plugin sockets; only privileged pods see it.
DEFAULT_SOCKET_DIR = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET_NAME = "kubelet.sock"
