"""The BFP formats of the emulated NPU: their parameters, the named presets and the default.

Role: the numpy-free half of ``fpgaserve.npu.bfp`` (which holds the quantizer and re-exports these
names), so that the command line can list and validate formats without loading numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

__all__ = [
    "AUTO_FORMAT",
    "DEFAULT_BUDGET",
    "DEFAULT_FORMAT",
    "FEATURE_BUDGET",
    "FORMATS",
    "ROUNDING_MODES",
    "BfpFormat",
    "Precision",
    "Rounding",
    "get_format",
    "get_precision",
    "parse_candidates",
]

Rounding = Literal["nearest", "even", "zero"]
ROUNDING_MODES: tuple[Rounding, ...] = ("nearest", "even", "zero")


@dataclass(frozen=True)
class BfpFormat:
    """A block floating point format: block size, shared exponent width, per-element mantissa."""

    name: str
    block_size: int
    exponent_bits: int
    mantissa_bits: int
    rounding: Rounding = "nearest"

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if not 2 <= self.exponent_bits <= 8:
            raise ValueError(f"exponent_bits must be in [2, 8], got {self.exponent_bits}")
        if not 1 <= self.mantissa_bits <= 15:
            raise ValueError(f"mantissa_bits must be in [1, 15], got {self.mantissa_bits}")
        if self.rounding not in ROUNDING_MODES:
            raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {self.rounding!r}")

    @property
    def emin(self) -> int:
        return -(1 << (self.exponent_bits - 1))

    @property
    def emax(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1

    @property
    def max_mantissa(self) -> int:
        return (1 << self.mantissa_bits) - 1

    @property
    def bits_per_value(self) -> float:
        """Average storage bits per element: sign + mantissa + the block's share of the exponent."""
        return 1 + self.mantissa_bits + self.exponent_bits / self.block_size

    def storage_bytes(self, *, values: int, blocks: int) -> int:
        """Bytes that ``values`` elements in ``blocks`` blocks occupy in device memory."""
        bits = values * (1 + self.mantissa_bits) + blocks * self.exponent_bits
        return (bits + 7) // 8

    def with_rounding(self, rounding: Rounding) -> BfpFormat:
        return replace(self, rounding=rounding)


# Published formats. ms-fp8/ms-fp9: Brainwave (Chung et al., IEEE Micro 2018; Fowers et al., ISCA 2018).
# MSFP12/MSFP16: Darvish Rouhani et al., "Pushing the Limits of Narrow Precision Inferencing at Cloud
# Scale with Microsoft Floating Point", NeurIPS 2020. int7-bfp/int12-bfp: the sign-magnitude block
# floating point of Intel's FPGA AI Suite ("FP11" and "FP16" arch_precision: 1s.6m.5e and 1s.11m.5e,
# mantissa widths counting the leading one), with its block (c_vector) set to 16.
FORMATS: dict[str, BfpFormat] = {
    "ms-fp8": BfpFormat("ms-fp8", block_size=128, exponent_bits=5, mantissa_bits=2),
    "ms-fp9": BfpFormat("ms-fp9", block_size=128, exponent_bits=5, mantissa_bits=3),
    "msfp12": BfpFormat("msfp12", block_size=16, exponent_bits=8, mantissa_bits=3),
    "msfp16": BfpFormat("msfp16", block_size=16, exponent_bits=8, mantissa_bits=7),
    "int7-bfp": BfpFormat("int7-bfp", block_size=16, exponent_bits=5, mantissa_bits=6),
    "int12-bfp": BfpFormat("int12-bfp", block_size=16, exponent_bits=5, mantissa_bits=11),
}
# The default must keep a model's answers without fine-tuning: int12-bfp does on the zoo's pretrained
# EfficientNet-Lite0 (top-1 agreement with float 100 % on bench/fpga.py's photos), MSFP16 does not
# (85 %). Narrower formats are one --format away. The reasoning and figures: docs/numerics.md.
DEFAULT_FORMAT = FORMATS["int12-bfp"]
# Not a format: asks for a mixed-precision program chosen against an accuracy budget (the zoo's and
# the command line's ``--format auto``; the search is ``fpgaserve.compiler.precision``).
AUTO_FORMAT = "auto"
# Its default budget: top-1 agreement with the float model expected on inputs like the calibration
# photos (estimated from margins, so that near-ties do not dominate: docs/numerics.md). 99 %: with
# the weight/activation pairs among the candidates, a 98 % search's program agreed on only 95.4 % of
# the held-apart benchmark photos (the estimate is optimistic there), the 99 % one on 99.3 %
# (EfficientNet-Lite0: 0.342 against int12-bfp's 0.356 ms; docs/benchmarks.md, issue 16).
DEFAULT_BUDGET = "expected-top1>=99%"
# ``fpgaserve compile``'s default instead: a user's featurizer has no classifier head to decide with,
# and the argmax of features is no class, so it keeps the features' direction.
FEATURE_BUDGET = "cosine>=0.999"


@dataclass(frozen=True)
class Precision:
    """What one matrix op runs in: the format its weights are packed in and the format its input
    activations are quantized in. Usually the same; a pair such as ``int12-bfp/msfp16`` (12-bit weights,
    8-bit activations) costs the matrix unit two passes instead of four (docs/numerics.md)."""

    weights: BfpFormat
    activations: BfpFormat

    @classmethod
    def of(cls, fmt: BfpFormat | Precision) -> Precision:
        """``fmt`` itself, or one format for both operands."""
        return fmt if isinstance(fmt, Precision) else cls(fmt, fmt)

    @property
    def uniform(self) -> bool:
        return self.weights == self.activations

    @property
    def name(self) -> str:
        """``WEIGHTS/ACTIVATIONS`` (e.g. ``int12-bfp/msfp16``), or the one format's name."""
        return self.weights.name if self.uniform else f"{self.weights.name}/{self.activations.name}"

    def with_rounding(self, rounding: Rounding) -> Precision:
        return Precision(self.weights.with_rounding(rounding), self.activations.with_rounding(rounding))

    def at_most(self, other: Precision) -> bool:
        """Whether neither operand is wider (in bits per value) than in ``other``: the precision search
        assumes such a candidate is no more accurate."""
        return (
            self.weights.bits_per_value <= other.weights.bits_per_value
            and self.activations.bits_per_value <= other.activations.bits_per_value
        )


def get_format(name: str) -> BfpFormat:
    """Look up a named format (case-insensitive); the error lists the known names."""
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown BFP format {name!r}; known formats: {', '.join(FORMATS)}") from None


def get_precision(text: str) -> Precision:
    """A format name (both operands) or a ``WEIGHTS/ACTIVATIONS`` pair of names, e.g. ``int12-bfp/msfp16``."""
    parts = [p.strip() for p in text.split("/")]
    if len(parts) > 2 or not all(parts):
        raise ValueError(
            f"cannot read precision {text!r}: write a format name (e.g. 'msfp16') or a pair "
            "WEIGHTS/ACTIVATIONS (e.g. 'int12-bfp/msfp16': 12-bit weights, 8-bit activations)"
        )
    try:
        formats = [get_format(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"in {text!r}: {exc}") from None
    return Precision(formats[0], formats[-1])


def parse_candidates(spec: str | Sequence[str | BfpFormat | Precision]) -> tuple[Precision, ...]:
    """The candidate list of a precision search: ``"ms-fp8,msfp16,int12-bfp/msfp16,int12-bfp"``
    (comma-separated, narrowest first, the widest last; ``WEIGHTS/ACTIVATIONS`` for a pair), or a
    sequence of names, formats and pairs. Refuses an empty list and repeats."""
    items = [p for p in spec.split(",") if p.strip()] if isinstance(spec, str) else list(spec)
    if not items:
        raise ValueError(
            "the candidate list is empty; write e.g. 'msfp16,int12-bfp/msfp16,int12-bfp' (narrowest first)"
        )
    cands = tuple(get_precision(c) if isinstance(c, str) else Precision.of(c) for c in items)
    repeated = sorted({c.name for c in cands if cands.count(c) > 1})
    if repeated:
        raise ValueError(f"the candidate list names {', '.join(repeated)} more than once")
    return cands
