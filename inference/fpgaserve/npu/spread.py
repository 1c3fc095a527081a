"""Whether an unsplit batch spreads each op over all cores or runs on one: chosen by measured time.

Role: ``Executor.run`` asks a ``SpreadChooser`` (one per batch size) before a batch that it does not
split into parts (a batch of one, by default), and reports the wall time after.

Spreading every op over the cores (its GEMM tiles and its kernels' row tiles shared with helper
threads: ``share.py``) makes a batch of one faster on an idle host. Before ``share.py``, the kernels
were numba ``prange`` loops, and on a host whose cores other processes also want spreading
collapsed: each of about a hundred parallel regions per run ended in a barrier that waited for a
thread the scheduler had not run yet (measured: ResNet-50 at load 8 on 2 cores, 2.47 s spread
against 0.36 s on one core). Now the caller waits only for tiles a helper has started, so a busy
core brings a spread run down to about one core's speed, not below; what spreading still costs is
the hand-offs (a few percent more CPU time per run), which a loaded host does not pay back. The
chooser keeps a moving average of each mode's wall time, runs the faster, and now and then tries
the other again (after 8 runs, then at doubling intervals up to 256 while the choice holds), so it
follows the host's load. Results do not depend on the mode: the kernels split rows, never
reductions, over threads, and the GEMMs run the same fixed tiles either way (tested).

``FPGASERVE_OP_PARALLEL``: ``auto`` (default), ``on`` (always spread, the behaviour before this
chooser), ``off`` (always one core).
"""

from __future__ import annotations

import os
import threading

__all__ = ["SpreadChooser", "spread_setting"]

_FIRST_PROBE = 8
_MAX_INTERVAL = 256
_WEIGHT = 0.3  # of the newest sample in the moving average


def spread_setting() -> bool | None:
    """``FPGASERVE_OP_PARALLEL`` as True (always spread), False (never) or None (measure)."""
    setting = os.environ.get("FPGASERVE_OP_PARALLEL", "auto").strip().lower()
    if setting in ("auto", ""):
        return None
    if setting in ("on", "1", "true", "yes", "all"):
        return True
    if setting in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"FPGASERVE_OP_PARALLEL must be auto, on or off, got {setting!r}")


class SpreadChooser:
    """Picks spread (True) or one core (False) for the next run from the runs reported so far."""

    def __init__(self, *, fixed: bool | None = None) -> None:
        self._fixed = fixed
        self._lock = threading.Lock()
        self._average: dict[bool, float | None] = {True: None, False: None}
        self._skipped: set[bool] = set()  # a mode's first run pays for first-touch page faults
        self._runs = 0
        self._interval = _FIRST_PROBE
        self._next_probe = _FIRST_PROBE

    def best(self) -> bool | None:
        """The mode with the lower average, once both have one."""
        spread, single = self._average[True], self._average[False]
        if spread is None or single is None:
            return None
        return spread <= single

    def choose(self) -> bool:
        if self._fixed is not None:
            return self._fixed
        with self._lock:
            for mode in (True, False):  # measure both first
                if self._average[mode] is None:
                    return mode
            best = bool(self.best())
            self._runs += 1
            if self._runs >= self._next_probe:  # try the other mode again: the load may have changed
                self._next_probe = self._runs + self._interval
                self._interval = min(self._interval * 2, _MAX_INTERVAL)
                return not best
            return best

    def record(self, spread: bool, seconds: float) -> None:
        if self._fixed is not None:
            return
        with self._lock:
            if spread not in self._skipped:
                self._skipped.add(spread)
                return
            before = self.best()
            average = self._average[spread]
            self._average[spread] = (
                seconds if average is None else (1 - _WEIGHT) * average + _WEIGHT * seconds
            )
            after = self.best()
            if before is not None and after != before:  # the load changed: look again sooner
                self._interval = _FIRST_PROBE
                self._next_probe = self._runs + _FIRST_PROBE
