"""Emulated FPGA devices: their hardware model, memory accounting and cycle model.

Role: what a board *is* (``DeviceModel``), and one board at run time (``EmulatedDevice``) holding
loaded programs in its weight memory. Used by the executor (timing), the server (which device to
run on) and the device plugin (what to advertise). numpy-free and TensorFlow-free on purpose.

Cycle model (documented in docs/device.md):

* A matrix-unit op (conv, dense) is a GEMM of ``rows x K`` activations by ``K x N`` weights. Each
  matrix unit retires one ``native_dim x native_dim`` weight tile against one activation vector per
  cycle, so the op takes ``rows * ceil(K/D) * ceil(N/D) / matrix_units`` cycles, plus a pipeline
  fill of ``op_overhead_cycles``. A lane multiplies ``native_element_bits``-bit elements (sign +
  mantissa) in one pass; a wider operand splits into limbs, and every limb of the weight meets every
  limb of the activation: ``ceil(weight_bits / n) * ceil(activation_bits / n)`` passes (4x for twice
  the width of both, as Intel's high-precision BFP costs; 2x for 12-bit weights against 8-bit
  activations).
* Depthwise convolutions and elementwise work (bias, activation, add, pooling) run on the vector
  units at ``vector_lanes`` elements per cycle, plus the same per-op overhead.
* Input and output tensors cross the host link at ``host_link_gbps`` (bytes/s = gbps * 1e9 / 8).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from math import ceil

__all__ = [
    "DEFAULT_DEVICE_MODEL",
    "DEVICE_MODELS",
    "DeviceMemoryError",
    "DeviceModel",
    "EmulatedDevice",
    "get_device_model",
]


@dataclass(frozen=True)
class DeviceModel:
    """The hardware parameters of one kind of emulated board."""

    name: str
    weight_memory_bytes: int
    matrix_units: int
    native_dim: int
    vector_lanes: int
    clock_mhz: float
    op_overhead_cycles: int = 64
    host_link_gbps: float = 64.0
    native_element_bits: int = 8  # sign + mantissa bits a matrix lane multiplies in one pass

    def __post_init__(self) -> None:
        for attr in (
            "weight_memory_bytes",
            "matrix_units",
            "native_dim",
            "vector_lanes",
            "native_element_bits",
        ):
            if getattr(self, attr) < 1:
                raise ValueError(f"DeviceModel.{attr} must be >= 1")
        if self.clock_mhz <= 0:
            raise ValueError("DeviceModel.clock_mhz must be > 0")

    def matrix_passes(self, element_bits: int, activation_bits: int | None = None) -> int:
        """Passes through the matrix lanes per tile: weights of ``element_bits`` (sign + mantissa)
        against activations of ``activation_bits`` (default: the same width), one limb pair a pass."""
        a_bits = element_bits if activation_bits is None else activation_bits
        n = self.native_element_bits
        return ceil(element_bits / n) * ceil(a_bits / n)

    def matrix_cycles(
        self,
        *,
        rows: int,
        reduction: int,
        outputs: int,
        element_bits: int = 8,
        activation_bits: int | None = None,
    ) -> int:
        """``element_bits``: the weights' sign + mantissa bits (and the activations' unless
        ``activation_bits`` gives theirs)."""
        tiles = ceil(reduction / self.native_dim) * ceil(outputs / self.native_dim)
        return (
            ceil(rows * tiles * self.matrix_passes(element_bits, activation_bits) / self.matrix_units)
            + self.op_overhead_cycles
        )

    def vector_cycles(self, *, elements: int) -> int:
        return ceil(elements / self.vector_lanes) + self.op_overhead_cycles

    def transfer_seconds(self, *, nbytes: int) -> float:
        return nbytes * 8 / (self.host_link_gbps * 1e9)

    def seconds(self, cycles: int) -> float:
        return cycles / (self.clock_mhz * 1e6)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "weightMemoryBytes": self.weight_memory_bytes,
            "matrixUnits": self.matrix_units,
            "nativeDim": self.native_dim,
            "vectorLanes": self.vector_lanes,
            "clockMHz": self.clock_mhz,
            "nativeElementBits": self.native_element_bits,
        }


MiB = 1 << 20
# Loosely after Brainwave on Intel Stratix 10 (Fowers et al., ISCA 2018): six matrix-vector tiles of
# native dimension 128 at 250-300 MHz, with weights pinned in on-chip SRAM (plus board memory for the
# larger model).
DEVICE_MODELS: dict[str, DeviceModel] = {
    "pbs-s10": DeviceModel(
        "pbs-s10",
        weight_memory_bytes=64 * MiB,
        matrix_units=6,
        native_dim=128,
        vector_lanes=1024,
        clock_mhz=300.0,
    ),
    "pbs-a10": DeviceModel(
        "pbs-a10",
        weight_memory_bytes=16 * MiB,
        matrix_units=2,
        native_dim=128,
        vector_lanes=256,
        clock_mhz=250.0,
    ),
    "pbs-tiny": DeviceModel(
        "pbs-tiny",
        weight_memory_bytes=1 * MiB,
        matrix_units=1,
        native_dim=32,
        vector_lanes=64,
        clock_mhz=200.0,
    ),
}
DEFAULT_DEVICE_MODEL = DEVICE_MODELS["pbs-s10"]


def get_device_model(name: str) -> DeviceModel:
    try:
        return DEVICE_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown device model {name!r}; known models: {', '.join(DEVICE_MODELS)}") from None


class DeviceMemoryError(RuntimeError):
    """A program does not fit in the device's free weight memory."""


@dataclass
class EmulatedDevice:
    """One emulated board: an ID, a model, and the programs resident in its weight memory."""

    model: DeviceModel = DEFAULT_DEVICE_MODEL
    device_id: str = field(default_factory=lambda: f"fpga-{uuid.uuid4().hex[:8]}")
    _resident: dict[str, int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def used_bytes(self) -> int:
        return sum(self._resident.values())

    @property
    def free_bytes(self) -> int:
        return self.model.weight_memory_bytes - self.used_bytes

    def resident_programs(self) -> dict[str, int]:
        return dict(self._resident)

    def load(self, *, key: str, nbytes: int) -> None:
        """Reserve weight memory for a program; refuses (never truncates) when it does not fit."""
        with self._lock:
            if key in self._resident:
                return
            if nbytes > self.model.weight_memory_bytes - sum(self._resident.values()):
                raise DeviceMemoryError(
                    f"program {key!r} needs {nbytes / MiB:.1f} MiB of weight memory but device "
                    f"{self.device_id} ({self.model.name}) has {self.free_bytes / MiB:.1f} MiB free of "
                    f"{self.model.weight_memory_bytes / MiB:.1f} MiB; use a narrower format, a smaller "
                    "model, or a device model with more memory"
                )
            self._resident[key] = nbytes

    def unload(self, *, key: str) -> None:
        with self._lock:
            self._resident.pop(key, None)
