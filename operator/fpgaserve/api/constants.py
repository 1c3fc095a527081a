"""Names shared by the device plugin, the operator and the inference server.

Role: one dependency-free home for the contract between them: the extended resource a pod asks
for (or the DRA driver and the attributes a claim selects on), the environment variables the
device plugin sets in a container on ``Allocate`` (and the operator sets on the pods it builds),
and where the devices' state directories are mounted.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_RESOURCE_NAME",
    "DEVICE_MOUNT_ROOT",
    "DRA_ATTR_MODEL",
    "DRA_CAPACITY_WEIGHT_MEMORY",
    "DRA_DEVICE_CLASS",
    "DRA_DRIVER_NAME",
    "ENV_DEVICE_IDS",
    "ENV_DEVICE_MODEL",
    "ENV_DEVICE_MOUNT_ROOT",
    "ENV_REQUIRE_DEVICE",
    "FULL_IMAGE",
    "OPERATOR_IMAGE",
    "SLIM_IMAGE",
]

# The extended resource the device plugin advertises; pods ask for it in resources.limits.
DEFAULT_RESOURCE_NAME = "fpgaserve.io/fpga"

# Set by the device plugin: comma-separated IDs of the devices allocated to the container.
ENV_DEVICE_IDS = "FPGASERVE_DEVICE_IDS"
# Set by the device plugin: the device model name (e.g. "pbs-s10"). Outside Kubernetes a user may
# set it to pick the model of the default emulated device.
ENV_DEVICE_MODEL = "FPGASERVE_DEVICE_MODEL"
# Set to "1" by the operator on pods that request an FPGA: the server refuses to start without one.
ENV_REQUIRE_DEVICE = "FPGASERVE_REQUIRE_DEVICE"

# Each allocated device's state directory is mounted read-only at DEVICE_MOUNT_ROOT/<device id>.
DEVICE_MOUNT_ROOT = "/var/run/fpgaserve/devices"
# Where the server looks for those directories instead (running a pod template as local
# processes, where a mount is a directory of the host).
ENV_DEVICE_MOUNT_ROOT = "FPGASERVE_DEVICE_MOUNT_ROOT"

# Dynamic Resource Allocation (resource.k8s.io/v1): the driver's name (also the domain of its device
# attributes), the DeviceClass the chart installs for it, and the attribute and capacity names that
# claims select on (see fpgaserve.dra.slices, which publishes them, and docs/dra.md).
DRA_DRIVER_NAME = "fpga.fpgaserve.io"
DRA_DEVICE_CLASS = "fpga.fpgaserve.io"
DRA_ATTR_MODEL = "model"
DRA_CAPACITY_WEIGHT_MEMORY = "weightMemory"

# This release's images (the Dockerfile's targets). The full one runs every role and TensorFlow
# stages; the slim one (serve-slim) the server, storage-init, the device plugin and the DRA driver
# without TensorFlow, a third of the size: the node agents default to it, so every node pulls
# 0.7 GB instead of 2.4; the operator's image holds the operator alone.
FULL_IMAGE = "fpgaserve/fpgaserve:0.1.0"
SLIM_IMAGE = "fpgaserve/fpgaserve-slim:0.1.0"
OPERATOR_IMAGE = "fpgaserve/fpgaserve-operator:0.1.0"
