"""Preparing and unpreparing ResourceClaims on this node: the decisions behind the DRA gRPC calls.

Role: called by ``fpgaserve.dra.service`` for each claim of a ``NodePrepareResources`` or
``NodeUnprepareResources`` request, one claim at a time under one lock. Preparing reads the claim's
allocation from the API (the kubelet sends only namespace, name and UID), checks that every device
allocated to this driver is one of this node's healthy devices, writes the claim's CDI spec and
records it in the checkpoint; it answers with the devices and their CDI device IDs. Both directions
are idempotent: a prepared claim is answered from the checkpoint (its spec rewritten if missing), an
unknown claim unprepares to nothing. A failing claim raises ``ClaimError``; the others go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from fpgaserve.deviceplugin.allocation import AllocationError, allocate_container
from fpgaserve.deviceplugin.state import DeviceInfo
from fpgaserve.dra.cdi import build_cdi_spec, cdi_device_id, remove_spec, spec_path, write_spec
from fpgaserve.dra.checkpoint import Checkpoint, PreparedClaim, PreparedDevice

__all__ = ["ClaimError", "ClaimPreparer", "ClaimRef"]

logger = logging.getLogger(__name__)

# (namespace, name) -> the ResourceClaim object, or None when it does not exist.
ClaimReader = Callable[[str, str], "Mapping[str, Any] | None"]


class ClaimError(Exception):
    """This claim cannot be prepared or unprepared; the message goes back to the kubelet."""


class ClaimRef:
    """The kubelet's reference to a claim."""

    __slots__ = ("name", "namespace", "uid")

    def __init__(self, *, namespace: str, name: str, uid: str) -> None:
        self.namespace = namespace
        self.name = name
        self.uid = uid

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} ({self.uid})"


def _allocated(claim: Mapping[str, Any], *, driver: str) -> list[dict[str, Any]]:
    allocation = ((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}
    return [r for r in allocation.get("results") or [] if r.get("driver") == driver]


class ClaimPreparer:
    """Prepares claims for ``driver`` on ``node_name`` (whose pool has the node's name)."""

    def __init__(
        self,
        *,
        driver: str,
        node_name: str,
        read_claim: ClaimReader,
        devices: Callable[[], tuple[DeviceInfo, ...]],
        checkpoint: Checkpoint,
        cdi_dir: Path,
        host_state_dir: PurePosixPath,
    ) -> None:
        self.driver = driver
        self.node_name = node_name
        self.read_claim = read_claim
        self.devices = devices
        self.checkpoint = checkpoint
        self.cdi_dir = cdi_dir
        self.host_state_dir = host_state_dir
        self._lock = threading.Lock()
        self._claims = checkpoint.load()  # fails loudly on a corrupt record rather than forget claims

    def prepared(self) -> dict[str, PreparedClaim]:
        with self._lock:
            return dict(self._claims)

    def prepare(self, ref: ClaimRef) -> PreparedClaim:
        with self._lock:
            known = self._claims.get(ref.uid)
            if known is not None:
                path = spec_path(cdi_dir=self.cdi_dir, claim_uid=ref.uid)
                if not path.exists():  # lost with a tmpfs /var/run: the recorded spec is the truth
                    write_spec(path, known.cdi_spec)
                return known
            prepared = self._prepare_new(ref)
            write_spec(spec_path(cdi_dir=self.cdi_dir, claim_uid=ref.uid), prepared.cdi_spec)
            claims = {**self._claims, ref.uid: prepared}
            self.checkpoint.save(claims)
            self._claims = claims
            logger.info("prepared claim %s: %s", ref, ", ".join(d.device_name for d in prepared.devices))
            return prepared

    def _prepare_new(self, ref: ClaimRef) -> PreparedClaim:
        claim = self.read_claim(ref.namespace, ref.name)
        if claim is None:
            raise ClaimError(f"ResourceClaim {ref.namespace}/{ref.name} not found")
        live_uid = (claim.get("metadata") or {}).get("uid")
        if live_uid != ref.uid:
            raise ClaimError(
                f"ResourceClaim {ref.namespace}/{ref.name} has UID {live_uid}, not {ref.uid}: it was replaced"
            )
        results = _allocated(claim, driver=self.driver)
        if not results:
            raise ClaimError(
                f"ResourceClaim {ref.namespace}/{ref.name} has no devices of {self.driver} allocated"
            )
        foreign = sorted({str(r.get("pool")) for r in results} - {self.node_name})
        if foreign:
            raise ClaimError(
                f"ResourceClaim {ref.namespace}/{ref.name} is allocated from pool(s) {', '.join(foreign)}, "
                f"not from this node's pool {self.node_name}"
            )
        requested = list(dict.fromkeys(str(r.get("device")) for r in results))
        try:
            allocation = allocate_container(
                requested=requested, devices=self.devices(), host_state_dir=self.host_state_dir
            )
        except AllocationError as exc:
            raise ClaimError(f"ResourceClaim {ref.namespace}/{ref.name}: {exc}") from None
        requests: dict[str, list[str]] = {}
        for result in results:
            requests.setdefault(str(result.get("device")), []).append(str(result.get("request")))
        devices = tuple(
            PreparedDevice(
                request_names=tuple(requests[device_id]),
                pool_name=self.node_name,
                device_name=device_id,
                cdi_device_ids=(cdi_device_id(claim_uid=ref.uid, device_id=device_id),),
            )
            for device_id in requested
        )
        spec = build_cdi_spec(claim_uid=ref.uid, device_ids=requested, allocation=allocation)
        return PreparedClaim(
            uid=ref.uid, namespace=ref.namespace, name=ref.name, devices=devices, cdi_spec=spec
        )

    def unprepare(self, ref: ClaimRef) -> bool:
        """Remove the claim's spec and record; False when it was not prepared (nothing to do)."""
        with self._lock:
            removed = remove_spec(spec_path(cdi_dir=self.cdi_dir, claim_uid=ref.uid))
            if ref.uid not in self._claims:
                return removed
            claims = {uid: claim for uid, claim in self._claims.items() if uid != ref.uid}
            self.checkpoint.save(claims)
            self._claims = claims
            logger.info("unprepared claim %s", ref)
            return True
