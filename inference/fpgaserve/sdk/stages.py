"""Pipeline stages: what a ``ModelDefinition.pipeline`` holds, and how each one is saved.

Role: the Brainwave notebook's stage types. ``TensorflowStage`` and ``KerasStage`` become
SavedModels run on the CPU; ``FpgaStage`` (alias ``BrainWaveStage``) becomes a device program.
Each stage's ``export(directory)`` writes its files and returns its manifest entry; the package
writer (``fpgaserve.sdk.package_writer``) hashes the files and zips them. The SavedModels written
here have one ``serving_default`` signature taking one batched tensor and returning one. A stage
that is exactly one fpgaserve built (``preprocess_array``, a zoo classifier: ``sdk.host_lowering``)
also gets its TensorFlow-free form beside the SavedModel (``runtime: host`` in the manifest).
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from fpgaserve.api.manifest import BfpFormatSpec, TensorSpecModel
from fpgaserve.sdk.graph_mode import GraphCut, cut_subgraph, eager, function_from_cut, signature_key
from fpgaserve.sdk.host_lowering import Lowering, keras_lowering, recorded, verify

__all__ = ["BrainWaveStage", "ExportedStage", "FpgaStage", "KerasStage", "Stage", "TensorflowStage"]

SIGNATURE = "serving_default"
PROGRAM_FILE = "program.fpga"


@dataclass(frozen=True)
class ExportedStage:
    """A stage written to disk: its manifest fields apart from name and member digests."""

    kind: str
    path: str  # relative to the stage directory ("" for the directory itself)
    input: TensorSpecModel
    output: TensorSpecModel
    extra: dict[str, Any] = field(default_factory=dict)


class Stage(ABC):
    """One step of a pipeline; ``name`` defaults to its position and kind."""

    kind: ClassVar[str]
    name: str | None = None

    @abstractmethod
    def export(self, directory: Path) -> ExportedStage:
        """Write the stage's files into the (new, empty) ``directory``."""


def _tensor_spec(name: str, dtype: Any, shape: Any) -> TensorSpecModel:
    """Manifest spec of a batched TF tensor: the batch dimension is dropped."""
    dtypes = {"string": "string", "float32": "float32", "int64": "int64"}
    if dtype.name not in dtypes:
        raise ValueError(
            f"tensor {name!r} is {dtype.name}; stage inputs and outputs must be string, float32 or int64"
        )
    if shape.rank is None:
        if dtype.name != "string":
            raise ValueError(
                f"tensor {name!r} has an unknown shape; give it a batch dimension and a known rank"
            )
        return TensorSpecModel(name=name, dtype="string", shape=())  # a batch of encoded images
    if shape.rank == 0:
        raise ValueError(f"tensor {name!r} is a scalar; stage tensors need a batch dimension first")
    return TensorSpecModel(name=name, dtype=dtypes[dtype.name], shape=tuple(shape.as_list()[1:]))


@dataclass
class _Saved:
    """What ``_save_function`` saved: the specs, the traced function, the lowering its trace recorded."""

    input: TensorSpecModel
    output: TensorSpecModel
    concrete: Any
    traced_lowering: Lowering | None = None


def _save_function(
    fn: Callable[[Any], Any], *, input_spec: Any, input_name: str, output_name: str, directory: Path
) -> _Saved:
    """Save ``fn`` (one batched tensor in, one out) as a SavedModel with one signature."""
    import tensorflow as tf

    signature_spec = tf.TensorSpec(input_spec.shape, input_spec.dtype, name=input_name)
    traced: list[Lowering | None] = []

    def call(x: Any) -> dict[str, Any]:
        y = fn(x)
        traced.append(recorded(x, y))  # fn returned preprocess_array's output of x itself
        return {output_name: y}

    serve = tf.function(call, input_signature=[signature_spec])
    concrete = serve.get_concrete_function()
    module = tf.Module()
    module.serve = serve
    # Variables the function reads must be tracked by the saved object graph.
    module.tracked_variables = list(concrete.variables)
    tf.saved_model.save(module, str(directory), signatures={SIGNATURE: concrete})
    out = concrete.structured_outputs[output_name]
    return _Saved(
        _tensor_spec(input_name, signature_spec.dtype, signature_spec.shape),
        _tensor_spec(output_name, out.dtype, out.shape),
        concrete,
        # Saving traces again: every trace must have been the recorded construction.
        traced[0] if traced and all(t is not None and t == traced[0] for t in traced) else None,
    )


def _batched(shape: Any) -> list[int | None]:
    dims = list(shape)
    return [None, *dims[1:]] if dims else [None]


def _keras_io_names(model: Any) -> tuple[str, str]:
    def name_of(tensor: Any, default: str) -> str:
        history = getattr(tensor, "_keras_history", None)
        return signature_key(history.operation.name) if history is not None else default

    return name_of(model.inputs[0], "input"), name_of(model.outputs[0], "output")


def _is_session(value: Any) -> bool:
    return hasattr(value, "graph") and hasattr(value, "run") and hasattr(value, "as_default")


class TensorflowStage(Stage):
    """A TensorFlow stage run on the CPU. Four forms:

    - ``TensorflowStage(sess, input_tensor, output_tensor)``: the notebook form under
      ``tf.compat.v1`` graph mode; the subgraph between the two tensors, frozen.
    - ``TensorflowStage(keras_model)``: a Keras model (one input, one output).
    - ``TensorflowStage(fn, input_signature=tf.TensorSpec([None, ...], dtype))``: a Python function
      or ``tf.function`` of one batched tensor (a ``tf.function`` with an input signature needs none).
    - ``TensorflowStage("path/to/saved_model")``: an existing SavedModel with a one-input, one-output
      ``signature``.
    """

    kind = "tensorflow"

    def __init__(
        self,
        source: Any,
        input_tensor: Any = None,
        output_tensor: Any = None,
        *,
        input_signature: Any = None,
        input_name: str | None = None,
        output_name: str | None = None,
        signature: str = SIGNATURE,
        name: str | None = None,
    ) -> None:
        self.name = name
        self._signature = signature
        self._cut: GraphCut | None = None
        self._recorded: Lowering | None = None
        self._source = source
        self._input_signature = input_signature
        self._names = (input_name, output_name)
        if _is_session(source):
            if input_tensor is None or output_tensor is None:
                raise TypeError("the notebook form is TensorflowStage(sess, input_tensor, output_tensor)")
            # Cut now: the session (and its variables' values) may be closed by the time of save().
            self._cut = cut_subgraph(source, input_tensor, output_tensor)
            self._recorded = recorded(input_tensor, output_tensor)
        elif input_tensor is not None or output_tensor is not None:
            raise TypeError("input and output tensors go with a tf.compat.v1 Session as the first argument")

    def export(self, directory: Path) -> ExportedStage:
        with eager():
            saved = self._export(directory)
            extra: dict[str, Any] = {}
            if isinstance(saved, _Saved):
                inputs, outputs = saved.input, saved.output
                lowering = self._lowering(saved)
                if lowering is not None:
                    extra = {"runtime": "host", "host": lowering.write(directory)}
            else:
                inputs, outputs = saved
        signature = self._signature if isinstance(self._source, (str, os.PathLike)) else SIGNATURE
        return ExportedStage(self.kind, "", inputs, outputs, {"signature": signature, **extra})

    def _lowering(self, saved: _Saved) -> Lowering | None:
        """The stage's host lowering: only for a construction fpgaserve recorded, and only if it
        agrees with the SavedModel's function on probe inputs (``host_lowering.verify``)."""
        if self._cut is not None:
            lowering = self._recorded
        elif hasattr(self._source, "inputs") and hasattr(self._source, "outputs"):
            lowering = keras_lowering(self._source)
        else:
            lowering = saved.traced_lowering
        if lowering is None:
            return None
        width = saved.input.shape[-1] if saved.input.shape else None
        key = saved.output.name

        def run(x: Any) -> Any:
            import tensorflow as tf

            tensor = tf.constant(x, dtype=tf.string if saved.input.dtype == "string" else tf.float32)
            return saved.concrete(tensor)[key].numpy()

        difference = verify(lowering, run, input_dtype=saved.input.dtype, input_width=width)
        return None if difference is None else lowering

    def _export(self, directory: Path) -> _Saved | tuple[TensorSpecModel, TensorSpecModel]:
        import tensorflow as tf

        if self._cut is not None:
            cut = self._cut
            fn = function_from_cut(cut)
            shape = [None] if cut.input_shape.rank is None else _batched(cut.input_shape.as_list())
            return _save_function(
                fn, input_spec=tf.TensorSpec(shape, cut.input_dtype), input_name=cut.input_name,
                output_name=cut.output_name, directory=directory,
            )  # fmt: skip
        source = self._source
        if isinstance(source, (str, os.PathLike)):
            return self._copy_saved_model(Path(source), directory)
        if hasattr(source, "inputs") and hasattr(source, "outputs"):  # a Keras model
            in_name, out_name = _keras_io_names(source)
            spec = tf.TensorSpec(_batched(source.inputs[0].shape), source.inputs[0].dtype)
            return _save_function(
                lambda x: source(x, training=False), input_spec=spec, directory=directory,
                input_name=self._names[0] or in_name, output_name=self._names[1] or out_name,
            )  # fmt: skip
        if callable(source):
            spec = self._input_signature
            if spec is None:
                declared = getattr(source, "input_signature", None)
                if not declared or len(declared) != 1:
                    raise TypeError(
                        "TensorflowStage(fn) needs input_signature=tf.TensorSpec([None, ...], dtype) "
                        "unless fn is a tf.function with a one-tensor input signature"
                    )
                spec = declared[0]
            if isinstance(spec, (list, tuple)):
                (spec,) = spec
            return _save_function(
                source, input_spec=spec, directory=directory,
                input_name=self._names[0] or signature_key(spec.name or "input"),
                output_name=self._names[1] or "output",
            )  # fmt: skip
        raise TypeError(f"cannot make a TensorflowStage from {type(source).__name__}")

    def _copy_saved_model(self, source: Path, directory: Path) -> tuple[TensorSpecModel, TensorSpecModel]:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(source))
        if self._signature not in loaded.signatures:
            raise ValueError(f"{source}: no signature {self._signature!r} (has {sorted(loaded.signatures)})")
        fn = loaded.signatures[self._signature]
        _, kwargs = fn.structured_input_signature
        outputs = fn.structured_outputs
        if len(kwargs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{source}: signature {self._signature!r} must take one tensor and return one "
                f"(takes {sorted(kwargs)}, returns {sorted(outputs)})"
            )
        ((in_name, in_spec),) = kwargs.items()
        ((out_name, out_spec),) = outputs.items()
        shutil.copytree(source, directory, symlinks=False)
        return _tensor_spec(in_name, in_spec.dtype, in_spec.shape), _tensor_spec(
            out_name, out_spec.dtype, out_spec.shape
        )


class KerasStage(TensorflowStage):
    """A Keras model (one input, one output) run on the CPU: ``KerasStage(model)``."""

    kind = "keras"

    def __init__(self, model: Any, *, name: str | None = None) -> None:
        if not (hasattr(model, "inputs") and hasattr(model, "outputs")):
            raise TypeError(f"KerasStage takes a Keras model, got {type(model).__name__}")
        super().__init__(model, name=name)


class FpgaStage(Stage):
    """A featurizer run on the (emulated) FPGA: a zoo model, a Keras model (compiled now), or a Program.

    ``fmt`` is the BFP format a Keras model is compiled to (a zoo model brings its own).
    """

    kind = "fpga"

    def __init__(
        self,
        featurizer: Any,
        *,
        fmt: str | None = None,
        input_shape: tuple[int, ...] | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name
        self._featurizer = featurizer
        self._fmt = fmt
        self._input_shape = input_shape

    def program(self) -> Any:
        """The device program (compiling the featurizer if it is a Keras model)."""
        from fpgaserve.npu.program import Program
        from fpgaserve.sdk.zoo import QuantizedModel

        featurizer = self._featurizer
        if isinstance(featurizer, Program):
            return featurizer
        with eager():
            if isinstance(featurizer, QuantizedModel):
                return featurizer.program
            if hasattr(featurizer, "inputs") and hasattr(featurizer, "outputs"):
                from fpgaserve.compiler.compile import compile_keras
                from fpgaserve.npu.bfp import DEFAULT_FORMAT, get_format

                fmt = get_format(self._fmt) if self._fmt else DEFAULT_FORMAT
                return compile_keras(featurizer, fmt=fmt, input_shape=self._input_shape)
        raise TypeError(
            f"FpgaStage takes a zoo model, a Keras model or a Program, got {type(featurizer).__name__}"
        )

    def export(self, directory: Path) -> ExportedStage:
        from dataclasses import asdict

        from fpgaserve.npu.program import save_program

        program = self.program()
        directory.mkdir(parents=True)
        digest = save_program(program, directory / PROGRAM_FILE)
        # The zoo model's version (weights and format), else what the program says it came from.
        source = str(program.metadata.get("version", program.name))
        return ExportedStage(
            self.kind,
            PROGRAM_FILE,
            TensorSpecModel(
                name=signature_key(program.input_name), dtype="float32", shape=program.input_shape
            ),
            TensorSpecModel(
                name=signature_key(program.output_name), dtype="float32", shape=program.output_shape
            ),
            {
                "format": BfpFormatSpec.model_validate(asdict(program.fmt)),
                "weight_bytes": program.weight_bytes,
                "program_sha256": digest,
                "program_version": program.file_version,
                "source": source,
                "layer_formats": {
                    op: BfpFormatSpec.model_validate(asdict(program.format_of(op)))
                    for op in program.layer_formats()
                    if program.format_of(op) != program.fmt
                },
                "layer_activation_formats": {
                    op: BfpFormatSpec.model_validate(asdict(program.activation_format_of(op)))
                    for op in program.layer_formats()
                    if program.activation_format_of(op) != program.format_of(op)
                },
            },
        )


def BrainWaveStage(sess: Any, featurizer: Any, *, name: str | None = None) -> FpgaStage:
    """The notebook's name: ``BrainWaveStage(sess, model)`` is ``FpgaStage(model)``.

    The session is not needed (the featurizer's device program replaces its part of the graph).
    """
    del sess
    return FpgaStage(featurizer, name=name)
