"""The emulated FPGA device plugin for the kubelet, and how pods find the devices it hands out.

Modules, by role:

* ``v1beta1``: the kubelet Device Plugin API (proto and generated gRPC code) and its constants.
* ``state``: the on-disk state of each emulated device (stable ID, description, health file).
* ``health``: watches device health and publishes snapshots to ListAndWatch streams.
* ``plugin``: the ``DevicePlugin`` gRPC service (ListAndWatch, Allocate, ...).
* ``server``: serves the plugin socket, registers with the kubelet, re-registers when it restarts.
* ``discovery``: called by the inference server to find the devices allocated to its container.
* ``manifest``: builds the DaemonSet that runs the plugin on every node.

Importing this package imports nothing else: the inference server uses ``discovery`` without grpc.
"""

from __future__ import annotations

__all__: list[str] = []
