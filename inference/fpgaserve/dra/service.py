"""The gRPC services the kubelet calls: plugin registration, and the DRA v1 ``DRAPlugin``.

Role: the protocol face of the driver, served by ``fpgaserve.dra.server``. ``Registration`` tells
the kubelet's plugin watcher who we are and where the DRA socket is; ``DRAPlugin`` turns each claim
of a request into a per-claim answer through ``fpgaserve.dra.prepare``, so that one bad claim never
fails the batch (the API asks for an entry per claim, an error in it when that claim failed).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fpgaserve.dra.checkpoint import CheckpointError
from fpgaserve.dra.pluginregistration import DRA_PLUGIN_TYPE
from fpgaserve.dra.pluginregistration import api_pb2 as reg_pb2
from fpgaserve.dra.pluginregistration import api_pb2_grpc as reg_grpc
from fpgaserve.dra.prepare import ClaimError, ClaimPreparer, ClaimRef
from fpgaserve.dra.v1 import DRA_PLUGIN_SERVICE, api_pb2, api_pb2_grpc

__all__ = ["DraService", "RegistrationService"]

logger = logging.getLogger(__name__)

# grpc ships no type information; its ServicerContext is Any to mypy.
Context = Any


class RegistrationService(reg_grpc.RegistrationServicer):
    """Answers the kubelet's plugin watcher; ``registered`` is set once it accepted us."""

    def __init__(self, *, driver: str, endpoint: str) -> None:
        self.driver = driver
        self.endpoint = endpoint
        self.registered = threading.Event()
        self.last_error = ""

    def GetInfo(self, request: reg_pb2.InfoRequest, context: Context) -> reg_pb2.PluginInfo:
        return reg_pb2.PluginInfo(
            type=DRA_PLUGIN_TYPE,
            name=self.driver,
            endpoint=self.endpoint,
            supported_versions=[DRA_PLUGIN_SERVICE],
        )

    def NotifyRegistrationStatus(
        self, request: reg_pb2.RegistrationStatus, context: Context
    ) -> reg_pb2.RegistrationStatusResponse:
        if request.plugin_registered:
            logger.info("registered %s with the kubelet", self.driver)
            self.last_error = ""
            self.registered.set()
        else:
            logger.error("the kubelet refused to register %s: %s", self.driver, request.error)
            self.last_error = request.error
            self.registered.clear()
        return reg_pb2.RegistrationStatusResponse()


def _ref(claim: api_pb2.Claim) -> ClaimRef:
    return ClaimRef(namespace=claim.namespace, name=claim.name, uid=claim.uid)


class DraService(api_pb2_grpc.DRAPluginServicer):
    """``NodePrepareResources`` and ``NodeUnprepareResources``, claim by claim."""

    def __init__(self, *, preparer: ClaimPreparer) -> None:
        self.preparer = preparer

    def NodePrepareResources(
        self, request: api_pb2.NodePrepareResourcesRequest, context: Context
    ) -> api_pb2.NodePrepareResourcesResponse:
        response = api_pb2.NodePrepareResourcesResponse()
        for claim in request.claims:
            entry = response.claims[claim.uid]
            if not claim.uid or not claim.namespace or not claim.name:
                entry.error = "claim needs namespace, name and uid"
                continue
            try:
                prepared = self.preparer.prepare(_ref(claim))
            except (ClaimError, CheckpointError, OSError) as exc:
                logger.warning("cannot prepare claim %s/%s: %s", claim.namespace, claim.name, exc)
                entry.error = str(exc)
                continue
            except Exception as exc:  # the API unreachable, ...: this claim fails, the kubelet retries
                logger.exception("preparing claim %s/%s failed", claim.namespace, claim.name)
                entry.error = f"{type(exc).__name__}: {exc}"
                continue
            entry.devices.extend(
                api_pb2.Device(
                    request_names=list(d.request_names),
                    pool_name=d.pool_name,
                    device_name=d.device_name,
                    cdi_device_ids=list(d.cdi_device_ids),
                )
                for d in prepared.devices
            )
        return response

    def NodeUnprepareResources(
        self, request: api_pb2.NodeUnprepareResourcesRequest, context: Context
    ) -> api_pb2.NodeUnprepareResourcesResponse:
        response = api_pb2.NodeUnprepareResourcesResponse()
        for claim in request.claims:
            entry = response.claims[claim.uid]
            try:
                self.preparer.unprepare(_ref(claim))
            except (CheckpointError, OSError) as exc:
                logger.warning("cannot unprepare claim %s/%s: %s", claim.namespace, claim.name, exc)
                entry.error = str(exc)
        return response
