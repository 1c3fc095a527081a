"""The ``DevicePlugin`` gRPC service that the kubelet calls on the plugin's socket.

Role: the protocol face of the plugin. It turns the health snapshots of ``health`` into the
``ListAndWatch`` stream and the decisions of ``allocation`` into protobuf answers; it owns no
sockets (``server`` serves it and registers it with the kubelet).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

import grpc

from fpgaserve.deviceplugin.allocation import AllocationError, allocate_container, preferred_devices
from fpgaserve.deviceplugin.health import HealthMonitor, HealthSnapshot
from fpgaserve.deviceplugin.v1beta1 import HEALTHY, UNHEALTHY, api_pb2, api_pb2_grpc

__all__ = ["FpgaDevicePlugin"]

logger = logging.getLogger(__name__)

# grpc ships no type information; its ServicerContext is Any to mypy.
Context = Any


def _device_list(snapshot: HealthSnapshot) -> api_pb2.ListAndWatchResponse:
    return api_pb2.ListAndWatchResponse(
        devices=[
            api_pb2.Device(ID=device.device_id, health=HEALTHY if device.healthy else UNHEALTHY)
            for device in snapshot.devices
        ]
    )


class FpgaDevicePlugin(api_pb2_grpc.DevicePluginServicer):
    """Serves the emulated devices watched by ``monitor``.

    ``host_state_dir`` is the devices' state directory as the node sees it, for the mounts; it is
    the plugin's own state directory when the plugin runs on the host or mounts the same path.
    ``stream_wakeup`` bounds how long a cancelled ListAndWatch stream may linger.
    """

    def __init__(
        self, *, monitor: HealthMonitor, host_state_dir: PurePosixPath, stream_wakeup: float = 1.0
    ) -> None:
        self.monitor = monitor
        self.host_state_dir = host_state_dir
        self.stream_wakeup = stream_wakeup

    @staticmethod
    def options() -> api_pb2.DevicePluginOptions:
        # Emulated boards need no reset before a container starts, so PreStartContainer is optional.
        return api_pb2.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)

    def GetDevicePluginOptions(self, request: api_pb2.Empty, context: Context) -> api_pb2.DevicePluginOptions:
        return self.options()

    def ListAndWatch(
        self, request: api_pb2.Empty, context: Context
    ) -> Iterator[api_pb2.ListAndWatchResponse]:
        context.add_callback(self.monitor.wake)  # a cancelled stream stops waiting at once
        snapshot = self.monitor.snapshot()
        logger.info("kubelet is watching %d device(s)", len(snapshot.devices))
        yield _device_list(snapshot)
        sent = snapshot.version
        while context.is_active() and not self.monitor.closed:
            snapshot = self.monitor.wait_for_change(after_version=sent, timeout=self.stream_wakeup)
            if snapshot.version != sent and context.is_active():
                logger.info("sending the kubelet an updated list of %d device(s)", len(snapshot.devices))
                yield _device_list(snapshot)
                sent = snapshot.version

    def GetPreferredAllocation(
        self, request: api_pb2.PreferredAllocationRequest, context: Context
    ) -> api_pb2.PreferredAllocationResponse:
        devices = self.monitor.snapshot().devices
        return api_pb2.PreferredAllocationResponse(
            container_responses=[
                api_pb2.ContainerPreferredAllocationResponse(
                    deviceIDs=preferred_devices(
                        available=list(req.available_deviceIDs),
                        must_include=list(req.must_include_deviceIDs),
                        size=req.allocation_size,
                        devices=devices,
                    )
                )
                for req in request.container_requests
            ]
        )

    def Allocate(self, request: api_pb2.AllocateRequest, context: Context) -> api_pb2.AllocateResponse:
        # Re-read health now rather than trust the last poll: a device failed a moment ago must not
        # be handed out.
        devices = self.monitor.check().devices
        responses = []
        for req in request.container_requests:
            try:
                allocation = allocate_container(
                    requested=list(req.devices_ids), devices=devices, host_state_dir=self.host_state_dir
                )
            except AllocationError as exc:
                logger.warning("refused allocation of %s: %s", ",".join(req.devices_ids), exc)
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            logger.info("allocated %s", allocation.envs)
            responses.append(
                api_pb2.ContainerAllocateResponse(
                    envs=allocation.envs,
                    mounts=[
                        api_pb2.Mount(
                            container_path=m.container_path, host_path=m.host_path, read_only=m.read_only
                        )
                        for m in allocation.mounts
                    ],
                )
            )
        return api_pb2.AllocateResponse(container_responses=responses)

    def PreStartContainer(
        self, request: api_pb2.PreStartContainerRequest, context: Context
    ) -> api_pb2.PreStartContainerResponse:
        # Nothing to reset on an emulated board; still refuse devices that are unknown or unhealthy.
        snapshot = self.monitor.check()
        bad = [device_id for device_id in request.devices_ids if not snapshot.health_of(device_id)]
        if bad:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"device(s) {', '.join(bad)} unknown or unhealthy"
            )
        return api_pb2.PreStartContainerResponse()
