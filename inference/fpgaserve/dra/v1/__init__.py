"""The kubelet's DRA gRPC API v1 (``k8s.io/kubelet/pkg/apis/dra/v1``): proto, generated modules, constants.

``api.proto`` is wire-compatible with the kubelet's definition; ``api_pb2*.py`` are generated from it
by ``python -m fpgaserve.dra.protogen`` and committed (never edit them by hand).
"""

from __future__ import annotations

__all__ = ["DRA_PLUGIN_SERVICE"]

# What a driver lists in PluginInfo.supported_versions to say it serves this API (types.go).
DRA_PLUGIN_SERVICE = "v1.DRAPlugin"
