from __future__ import annotations

import platform

import pytest

from fpgaserve.npu import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tuning_applies_once_on_glibc() -> None:
    assert allocator.tune_allocator() is True
    assert allocator.tune_allocator() is True  # idempotent: the second call changes nothing


def test_tuning_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FPGASERVE_MALLOC_TUNING", "0")
    assert allocator._apply() is False
