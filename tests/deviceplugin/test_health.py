"""The health monitor: snapshots, change detection, waking ListAndWatch waiters."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from fpgaserve.deviceplugin.health import HealthMonitor, HealthSnapshot
from fpgaserve.deviceplugin.state import DeviceStore
from tests.support.polling import DEADLINE, wait_until


def test_initial_snapshot_lists_the_devices(make_store: Callable[..., DeviceStore]) -> None:
    store = make_store(count=3)
    snapshot = HealthMonitor(store=store, interval=1.0).snapshot()
    assert snapshot.version == 0
    assert [d.device_id for d in snapshot.devices] == store.ids()
    assert snapshot.health_of(store.ids()[0]) is True
    assert snapshot.health_of("fpga-unknown-0") is None


def test_check_publishes_a_new_version_only_on_change(make_store: Callable[..., DeviceStore]) -> None:
    store = make_store(count=2)
    monitor = HealthMonitor(store=store, interval=1.0)
    assert monitor.check().version == 0

    store.set_health(store.ids()[1], healthy=False, reason="drill")
    changed = monitor.check()
    assert changed.version == 1
    assert changed.health_of(store.ids()[1]) is False
    assert monitor.check().version == 1


def test_wait_for_change_returns_when_another_thread_fails_a_device(
    make_store: Callable[..., DeviceStore],
) -> None:
    store = make_store(count=1)
    monitor = HealthMonitor(store=store, interval=1.0)
    result: list[HealthSnapshot] = []
    waiter = threading.Thread(
        target=lambda: result.append(monitor.wait_for_change(after_version=0, timeout=5.0))
    )
    waiter.start()
    store.set_health(store.ids()[0], healthy=False)
    monitor.check()
    waiter.join(timeout=5.0)
    assert result and result[0].version == 1


def test_wait_for_change_times_out_with_the_same_snapshot(make_store: Callable[..., DeviceStore]) -> None:
    monitor = HealthMonitor(store=make_store(count=1), interval=1.0)
    assert monitor.wait_for_change(after_version=0, timeout=0.01).version == 0


def test_background_polling_notices_a_health_file_change(make_store: Callable[..., DeviceStore]) -> None:
    store = make_store(count=2)
    monitor = HealthMonitor(store=store, interval=0.02)
    monitor.start()
    try:
        (store.root / store.ids()[0] / "health").write_text("Unhealthy\nhand-edited\n")
        wait_until(lambda: monitor.snapshot().health_of(store.ids()[0]) is False, what="unhealthy device")
    finally:
        monitor.close()


def test_close_releases_waiters_at_once(make_store: Callable[..., DeviceStore]) -> None:
    monitor = HealthMonitor(store=make_store(count=1), interval=0.02)
    monitor.start()
    waiter = threading.Thread(target=lambda: monitor.wait_for_change(after_version=0, timeout=30.0))
    waiter.start()
    monitor.close()
    waiter.join(timeout=DEADLINE)
    assert not waiter.is_alive()  # released by close, not by its 30 s timeout
    assert monitor.closed


def test_interval_must_be_positive(make_store: Callable[..., DeviceStore]) -> None:
    with pytest.raises(ValueError):
        HealthMonitor(store=make_store(count=1), interval=0)
