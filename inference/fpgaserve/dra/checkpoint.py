"""The driver's record of prepared claims, on disk, so that a restart neither loses nor duplicates one.

Role: read and written by ``fpgaserve.dra.prepare`` under its lock. One JSON file maps each
prepared claim's UID to what it was given (devices and CDI device IDs). A claim prepared again
after a restart gets the recorded answer, not a second preparation; an unprepare after a restart
still finds what to remove. The file is replaced atomically, so a crash leaves the old or the new
record, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Checkpoint", "CheckpointError", "PreparedClaim", "PreparedDevice"]

_VERSION = 1


class CheckpointError(Exception):
    """The checkpoint file exists but cannot be read; the driver must not guess what was prepared."""


@dataclass(frozen=True)
class PreparedDevice:
    request_names: tuple[str, ...]
    pool_name: str
    device_name: str
    cdi_device_ids: tuple[str, ...]


@dataclass(frozen=True)
class PreparedClaim:
    uid: str
    namespace: str
    name: str
    devices: tuple[PreparedDevice, ...]
    cdi_spec: dict[str, Any]


def _claim_from(raw: dict[str, Any]) -> PreparedClaim:
    return PreparedClaim(
        uid=str(raw["uid"]),
        namespace=str(raw["namespace"]),
        name=str(raw["name"]),
        devices=tuple(
            PreparedDevice(
                request_names=tuple(d["request_names"]),
                pool_name=str(d["pool_name"]),
                device_name=str(d["device_name"]),
                cdi_device_ids=tuple(d["cdi_device_ids"]),
            )
            for d in raw["devices"]
        ),
        cdi_spec=dict(raw["cdi_spec"]),
    )


class Checkpoint:
    """The prepared claims in ``path`` (created on first write)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, PreparedClaim]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read the checkpoint {self.path}: {exc}") from None
        if not isinstance(raw, dict) or raw.get("version") != _VERSION:
            raise CheckpointError(f"{self.path}: not a version-{_VERSION} fpgaserve DRA checkpoint")
        try:
            return {uid: _claim_from(claim) for uid, claim in raw["claims"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: malformed claim record ({exc})") from None

    def save(self, claims: dict[str, PreparedClaim]) -> None:
        body = {"version": _VERSION, "claims": {uid: asdict(claim) for uid, claim in sorted(claims.items())}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(body, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())  # the record must survive a node crash, not just a restart
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
