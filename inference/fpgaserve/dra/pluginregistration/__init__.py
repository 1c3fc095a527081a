"""The kubelet's plugin registration API v1 (``k8s.io/kubelet/pkg/apis/pluginregistration/v1``).

``api.proto`` is wire-compatible with the kubelet's definition; ``api_pb2*.py`` are generated from it
by ``python -m fpgaserve.dra.protogen`` and committed (never edit them by hand).
"""

from __future__ import annotations

__all__ = ["DEFAULT_REGISTRY_DIR", "DRA_PLUGIN_TYPE"]

# PluginInfo.type of a DRA driver, and the directory the kubelet's plugin watcher watches.
DRA_PLUGIN_TYPE = "DRAPlugin"
DEFAULT_REGISTRY_DIR = "/var/lib/kubelet/plugins_registry"
