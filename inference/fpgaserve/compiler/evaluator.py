"""The precision search's runs: program variants compiled and run on the calibration batch, scored.

Role: ``fpgaserve.compiler.precision`` (the search) asks an ``Evaluator`` for the device costs of a
choice of formats and for its score against float; the evaluator compiles the variant
(``compiler.compile``), runs it on the emulator's own lowering and kernels, chunk by chunk on a pool
of one thread per core, and restarts a variant from the first op it changes when a kept run
(``RunState``) differs from it only after there. With bias correction every variant is run
corrected (``compiler.bias_correction``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fpgaserve.compiler.bias_correction import (
    NEAR_FLOAT,
    Biases,
    FloatMeans,
    corrected_run,
    dead_tensors,
    float_means,
)
from fpgaserve.compiler.budget import Reference, Score
from fpgaserve.compiler.keras_import import Graph
from fpgaserve.npu.device import DEFAULT_DEVICE_MODEL
from fpgaserve.npu.formats import BfpFormat, Precision
from fpgaserve.npu.kernels import load_kernels
from fpgaserve.npu.lowering import Env, lower_program
from fpgaserve.npu.program import MATRIX_OPS, Program
from fpgaserve.npu.threads import available_cores, blas_single_threaded

__all__ = ["CHUNK", "Evaluator", "Formats", "RunState"]

F32 = npt.NDArray[np.float32]
Formats = dict[str, Precision]
CHUNK = 8  # calibration examples per chunk of a run (chunks run side by side, one per core)


@dataclass
class RunState:
    """A program variant run on the first ``n`` calibration examples, with every activation kept
    (one env per chunk), so that variants differing from it only later can restart where they do."""

    formats: Formats
    envs: list[Env]
    score: Score
    biases: Biases = field(default_factory=dict)  # the corrected biases (with bias correction)


class Evaluator:
    """Compiles and runs program variants on the calibration batch, scoring them against float."""

    def __init__(
        self, graph: Graph, *, reference: Reference, calibration: F32, base: BfpFormat, name: str,
        metadata: dict[str, Any], bias_correction: bool = False,
    ) -> None:  # fmt: skip
        from fpgaserve.compiler.compile import WeightCache

        self.graph = graph
        self.reference = reference
        self.calibration = calibration
        self.base = base
        self.name = name
        self.metadata = metadata
        self.cache: WeightCache = {}
        self.runs = 0
        self.op_steps = 0  # ops run, over all runs: the search's real work
        self._kernels = load_kernels()
        self._index = {g.name: i for i, g in enumerate(graph.ops)}
        producers = {g.output: i for i, g in enumerate(graph.ops)}
        # Where a run must restart when an op's format changes: at the op, or at the producer of its
        # input (a depthwise conv quantizes its output in its pointwise consumer's format).
        self._restart = {
            g.name: min([i, *(producers[t] for t in g.inputs if t in producers)])
            for i, g in enumerate(graph.ops)
            if g.kind in MATRIX_OPS
        }
        # Tensors a run that keeps nothing may drop after each step (their last reader has run).
        self._dead = dead_tensors(graph.ops, output_name=graph.output_name)
        self._pool = ThreadPoolExecutor(max_workers=available_cores(), thread_name_prefix="precision")
        # With bias correction every variant is run corrected against the float program's means (on
        # the same first examples: the sensitivity subset is a prefix of the batch).
        self._float_means: FloatMeans | None = None
        if bias_correction:
            layers = [g.name for g in graph.ops if g.kind in MATRIX_OPS]
            float_program = self.program(dict.fromkeys(layers, NEAR_FLOAT))
            self._float_means = float_means(
                float_program, calibration=calibration, pool=self._pool, kernels=self._kernels
            )

    def close(self) -> None:
        self._pool.shutdown()

    def program(self, formats: Formats, biases: Biases | None = None) -> Program:
        from fpgaserve.compiler.compile import compile_graph

        base = Precision.of(self.base)
        return compile_graph(
            self.graph, fmt=self.base, name=self.name, metadata=self.metadata,
            layer_formats={k: f for k, f in formats.items() if f != base}, cache=self.cache, biases=biases,
        )  # fmt: skip

    def op_costs(self, formats: Formats) -> dict[str, tuple[int, int]]:
        """Per matrix op: (modeled cycles at batch 1, packed weight bytes), from the executor's code."""
        program = self.program(formats)
        steps = lower_program(program, kernels=self._kernels)
        return {
            op.name: (step.cycles(1, DEFAULT_DEVICE_MODEL), program.op_weight_bytes(op.name))
            for op, step in zip(program.ops, steps, strict=True)
            if op.kind in MATRIX_OPS
        }

    def run(self, formats: Formats, *, n: int, since: RunState | None = None, keep: bool = False) -> RunState:
        """Run ``formats`` on the first ``n`` examples: from scratch, or from where it first differs
        from ``since`` (a kept run on the same examples). ``keep``: keep the activations."""
        changed = [k for k, f in formats.items() if since is None or since.formats[k] != f]
        start = min((self._restart[k] for k in changed), default=len(self.graph.ops))
        if since is None:
            start = 0
        if since is not None:
            assert len(since.envs) == -(-n // CHUNK), "a kept run on other examples"
        if self._float_means is not None:  # compiles and lowers the variant itself, with its biases
            return self._run_corrected(formats, n=n, start=start, since=since, keep=keep)
        steps = lower_program(self.program(formats), kernels=self._kernels)[start:]
        chunks = range(len(since.envs)) if since is not None else range(0, n, CHUNK)
        dead = () if keep else self._dead[start:]

        def chunk(c: int) -> Env:
            if since is not None:  # the kept run's activations, shared: steps only add new tensors
                env = dict(since.envs[c])
            else:
                env = {self.graph.input_name: self.calibration[c : min(c + CHUNK, n)]}
            for i, step in enumerate(steps):
                step.run(env)
                for t in dead[i] if dead else ():
                    env.pop(t, None)
            return env

        self.runs += 1
        self.op_steps += len(steps) * n
        with blas_single_threaded():
            done = list(self._pool.map(chunk, chunks))
        out = np.concatenate([env[self.graph.output_name] for env in done])
        return RunState(dict(formats), done if keep else [], self.reference.score(out))

    def _run_corrected(
        self, formats: Formats, *, n: int, start: int, since: RunState | None, keep: bool
    ) -> RunState:
        """``run`` with bias correction: the biases of the ops before ``start`` are the kept run's (a
        correction depends only on the ops before it), the rest are corrected as the run goes."""
        assert self._float_means is not None
        program = self.program(formats)
        if since is not None:
            before = {k: b for k, b in since.biases.items() if self._index[k] < start}
            program.biases.update(before)
            envs = [dict(env) for env in since.envs]
        else:
            envs = [
                {self.graph.input_name: self.calibration[c : min(c + CHUNK, n)]} for c in range(0, n, CHUNK)
            ]
        biases = corrected_run(
            program, envs=envs, start=start, reference=self._float_means, kernels=self._kernels,
            pool=self._pool, keep=keep,
        )  # fmt: skip
        self.runs += 1
        self.op_steps += (len(self.graph.ops) - start) * n
        out = np.concatenate([env[self.graph.output_name] for env in envs])
        return RunState(dict(formats), envs if keep else [], self.reference.score(out), biases)
