"""An unsplit batch spreads its ops over the cores or runs on one, whichever measured faster."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fpgaserve.npu import EmulatedDevice, Executor
from fpgaserve.npu.kernels import load_kernels
from fpgaserve.npu.spread import SpreadChooser, spread_setting
from fpgaserve.npu.threads import _openblas
from tests.npu.helpers import assert_bits_equal
from tests.npu.test_executor import BIG, batch, mobile_program, residual_program


def drive(chooser: SpreadChooser, seconds: dict[bool, float], runs: int) -> list[bool]:
    """``runs`` runs where each mode takes ``seconds[mode]``; the modes chosen."""
    chosen = []
    for _ in range(runs):
        mode = chooser.choose()
        chooser.record(mode, seconds[mode])
        chosen.append(mode)
    return chosen


def test_the_faster_mode_is_chosen_and_the_other_probed_ever_more_rarely() -> None:
    chooser = SpreadChooser()
    chosen = drive(chooser, {True: 0.3, False: 0.1}, 400)
    assert chosen[:4] == [True, True, False, False]  # both measured (first runs not counted)
    assert chooser.best() is False
    probes = [i for i, mode in enumerate(chosen[4:]) if mode]
    assert 4 <= len(probes) <= 8  # after 8 runs, then at doubling intervals
    gaps = np.diff(probes)
    assert all(later >= earlier for earlier, later in itertools.pairwise(gaps))


def test_the_choice_follows_the_load() -> None:
    chooser = SpreadChooser()
    drive(chooser, {True: 0.05, False: 0.09}, 100)  # an idle host: spreading wins
    assert chooser.best() is True
    chosen = drive(chooser, {True: 0.9, False: 0.1}, 60)  # other processes take the cores
    assert chooser.best() is False
    assert chosen[-20:].count(False) >= 19


@pytest.mark.parametrize(("value", "fixed"), [("auto", None), ("", None), ("on", True), ("OFF", False)])
def test_the_setting(monkeypatch: pytest.MonkeyPatch, value: str, fixed: bool | None) -> None:
    monkeypatch.setenv("FPGASERVE_OP_PARALLEL", value)
    assert spread_setting() is fixed
    if fixed is not None:
        chooser = SpreadChooser(fixed=fixed)
        assert drive(chooser, {True: 1.0, False: 1.0}, 5) == [fixed] * 5


def test_a_bad_setting_is_named_when_the_executor_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FPGASERVE_OP_PARALLEL", "sometimes")
    with pytest.raises(ValueError, match="FPGASERVE_OP_PARALLEL"):
        Executor(residual_program(), device=EmulatedDevice(model=BIG))


@pytest.mark.parametrize("make", [residual_program, mobile_program], ids=["residual", "mobile"])
def test_both_modes_give_the_same_bits_and_restore_the_thread_counts(
    monkeypatch: pytest.MonkeyPatch, make
) -> None:  # type: ignore[no-untyped-def]
    import numba

    program = make()
    x = batch(5, 1, program.input_shape)
    blas = _openblas()
    before = (numba.get_num_threads(), blas[0]() if blas else None)
    outputs = []
    for setting in ("on", "off"):
        monkeypatch.setenv("FPGASERVE_OP_PARALLEL", setting)
        with Executor(program, device=EmulatedDevice(model=BIG), kernels=load_kernels("numba")) as ex:
            outputs.append(ex.run(x).outputs)
    assert_bits_equal(outputs[1], outputs[0], "one core vs spread")
    assert (numba.get_num_threads(), blas[0]() if blas else None) == before
