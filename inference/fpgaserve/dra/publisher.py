"""Keeps the node's ResourceSlice equal to its devices: created once, patched when they change.

Role: called by ``fpgaserve.dra.server`` at start-up and after every health change the
``HealthMonitor`` sees. The pool's generation goes up with every change of the device list, as
the scheduler expects; publishing the same devices twice writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fpgaserve.deviceplugin.state import DeviceInfo
from fpgaserve.dra.kubeapi import KubeApi, slice_path
from fpgaserve.dra.slices import build_resource_slice, slice_name

__all__ = ["SlicePublisher"]

logger = logging.getLogger(__name__)


def _is_subset(desired: Any, live: Any) -> bool:
    # Fields the API server defaults are not drift; lists compare element by element.
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            k in live and _is_subset(v, live[k]) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(_is_subset(d, v) for d, v in zip(desired, live, strict=True))
        )
    return bool(desired == live)


class SlicePublisher:
    """Publishes ``driver``'s slice for ``node_name``."""

    def __init__(self, *, api: KubeApi, node_name: str, driver: str) -> None:
        self.api = api
        self.node_name = node_name
        self.driver = driver
        self.name = slice_name(node_name=node_name, driver=driver)
        self._node: dict[str, Any] | None = None

    def _owner(self) -> dict[str, Any] | None:
        # The Node, so that the slice goes with it; None where the driver may not read it.
        if self._node is None:
            self._node = self.api.get(f"/api/v1/nodes/{self.node_name}", what=f"get Node {self.node_name}")
        return self._node

    def publish(self, devices: Sequence[DeviceInfo]) -> dict[str, Any]:
        """Create or update the slice; returns the live object."""
        live = self.api.get(slice_path(self.name), what=f"get ResourceSlice {self.name}")
        if live is None:
            desired = build_resource_slice(
                node_name=self.node_name,
                driver=self.driver,
                devices=devices,
                generation=1,
                owner=self._owner(),
            )
            created = self.api.create(slice_path(), desired, what=f"create ResourceSlice {self.name}")
            logger.info(
                "published ResourceSlice %s with %d device(s)", self.name, len(desired["spec"]["devices"])
            )
            return created
        generation = int(((live.get("spec") or {}).get("pool") or {}).get("generation") or 0)
        current = build_resource_slice(
            node_name=self.node_name, driver=self.driver, devices=devices, generation=generation
        )
        if _is_subset(current["spec"], live.get("spec")):
            return live
        desired = build_resource_slice(
            node_name=self.node_name, driver=self.driver, devices=devices, generation=generation + 1
        )
        patched = self.api.patch(
            slice_path(self.name), {"spec": desired["spec"]}, what=f"patch ResourceSlice {self.name}"
        )
        logger.info(
            "updated ResourceSlice %s: %d device(s), pool generation %d",
            self.name,
            len(desired["spec"]["devices"]),
            generation + 1,
        )
        return patched
