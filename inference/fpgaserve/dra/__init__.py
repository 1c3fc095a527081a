"""The emulated FPGAs' Dynamic Resource Allocation driver (``resource.k8s.io/v1``, kubelet DRA v1).

A node runs either this driver or the device plugin (``fpgaserve.deviceplugin``), whose device
state, health monitor and allocation decisions it reuses. Modules, by role:

* ``v1``, ``pluginregistration``: the kubelet's DRA and plugin registration APIs (protos, stubs).
* ``slices``: the node's ResourceSlice (devices, attributes, capacity); ``publisher`` keeps it current
  through ``kubeapi``.
* ``cdi``: the CDI spec of a prepared claim; ``checkpoint``: the prepared claims on disk;
  ``prepare``: the per-claim decisions; ``service``: the gRPC services; ``server``: sockets and loop.
* ``protogen``: regenerates the stubs.

Importing this package imports nothing else.
"""

from __future__ import annotations

__all__: list[str] = []
