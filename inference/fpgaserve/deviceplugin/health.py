"""Watches the health of the emulated devices and publishes it to the ListAndWatch streams.

Role: the one poller of the device state directories (see ``state``). The plugin's ``ListAndWatch``
streams block in ``wait_for_change`` and send the kubelet a new device list whenever the snapshot's
version moves; ``check`` can also be called directly after failing or restoring a device in-process.
Stat polling, not inotify: it works the same on every filesystem and hostPath, and a device list
changes rarely.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from fpgaserve.deviceplugin.state import DeviceInfo, DeviceStore

__all__ = ["HealthMonitor", "HealthSnapshot"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthSnapshot:
    """The devices as last seen; ``version`` grows by one with every change."""

    version: int
    devices: tuple[DeviceInfo, ...]

    def health_of(self, device_id: str) -> bool | None:
        """True/False for a known device, None for an unknown one."""
        for device in self.devices:
            if device.device_id == device_id:
                return device.healthy
        return None


def _signature(devices: tuple[DeviceInfo, ...]) -> tuple[tuple[str, bool], ...]:
    # Only what the kubelet sees: which devices exist and whether each is healthy.
    return tuple((d.device_id, d.healthy) for d in devices)


class HealthMonitor:
    """Polls a ``DeviceStore`` every ``interval`` seconds in a background thread."""

    def __init__(self, *, store: DeviceStore, interval: float) -> None:
        if interval <= 0:
            raise ValueError("health-check interval must be > 0")
        self.store = store
        self.interval = interval
        self._cond = threading.Condition()
        self._snapshot = HealthSnapshot(version=0, devices=tuple(store.read_all()))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> HealthSnapshot:
        with self._cond:
            return self._snapshot

    def check(self) -> HealthSnapshot:
        """Re-read the store now; publish and log a new snapshot if anything changed."""
        devices = tuple(self.store.read_all())
        with self._cond:
            old = self._snapshot
            if _signature(devices) == _signature(old.devices):
                return old
            self._snapshot = HealthSnapshot(version=old.version + 1, devices=devices)
            self._cond.notify_all()
        before = dict(_signature(old.devices))
        for device in devices:
            if before.get(device.device_id) != device.healthy:
                if device.healthy:
                    logger.info("device %s is healthy", device.device_id)
                else:
                    logger.warning("device %s is unhealthy: %s", device.device_id, device.reason)
        for gone in before.keys() - {d.device_id for d in devices}:
            logger.warning("device %s is gone", gone)
        return self._snapshot

    def wait_for_change(self, *, after_version: int, timeout: float) -> HealthSnapshot:
        """The current snapshot once its version differs from ``after_version``, or after
        ``timeout`` seconds or a ``wake`` (callers compare versions themselves)."""
        with self._cond:
            if self._snapshot.version == after_version and not self._stop.is_set():
                self._cond.wait(timeout)
            return self._snapshot

    def wake(self) -> None:
        """Wake every waiter, e.g. when the stream it serves has been cancelled."""
        with self._cond:
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="fpga-health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop polling and release every waiter for good."""
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # a bad poll must not kill health watching for the plugin's lifetime
                logger.exception("health check failed")
