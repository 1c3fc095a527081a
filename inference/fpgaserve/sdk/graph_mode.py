"""The notebook form under ``tf.compat.v1`` graph mode: freezing Keras into graphs, cutting subgraphs.

Role: what lets the Brainwave notebook's code (``tf.placeholder``, ``tf.Session``,
``model.import_graph_def(image_tensors)``, ``TensorflowStage(sess, input, output)``) run on Keras 3.
Keras models are built and frozen in eager mode (``eager()``, even when the program disabled v2
behaviour) and imported into the session's graph as constants; a stage is the subgraph between two
tensors, cut out of the session's graph and turned back into a TF2 function for a SavedModel.
Called by the zoo's ``import_graph_def``, ``Resnet50.get_default_classifier`` and ``TensorflowStage``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GraphCut",
    "cut_subgraph",
    "eager",
    "function_from_cut",
    "import_keras",
    "is_v1_graph_tensor",
    "signature_key",
]

_FEED = "fpgaserve_stage_input"
_VARIABLE_OPS = frozenset({"Variable", "VariableV2", "VarHandleOp", "AutoReloadVariable"})


@contextmanager
def eager() -> Iterator[None]:
    """Run the block eagerly, also in a program that called ``tf.compat.v1.disable_v2_behavior()``."""
    import tensorflow as tf

    if tf.executing_eagerly():
        yield
        return
    # No public API switches back to eager once v2 behaviour is disabled; TensorFlow's own tests
    # use this context manager for the same purpose.
    from tensorflow.python.eager import context

    with context.eager_mode():
        yield


def is_v1_graph_tensor(value: Any) -> bool:
    """True for a symbolic tensor of a ``tf.compat.v1`` graph (not eager, not a tf.function trace)."""
    try:
        graph = value.graph
    except AttributeError:  # eager tensors, numpy arrays, Keras symbolic tensors
        return False
    from tensorflow.python.framework.func_graph import FuncGraph

    return graph is not None and not isinstance(graph, FuncGraph)


def import_keras(build: Callable[[], Any], tensor: Any, *, name: str) -> Any:
    """Apply the Keras model ``build()`` returns to a v1 graph ``tensor``, as frozen constants.

    The model is built (if it is not yet) and frozen eagerly, then its GraphDef is imported into
    ``tensor``'s graph under the name scope ``name``; returns the output tensor.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    with eager():
        model = build()
        shape = [None, *model.inputs[0].shape[1:]]
        traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(
            tf.TensorSpec(shape, model.inputs[0].dtype)
        )
        frozen = convert_variables_to_constants_v2(traced)
        graph_def = frozen.graph.as_graph_def()
        input_name, output_name = frozen.inputs[0].name, frozen.outputs[0].name
    with tensor.graph.as_default():
        (output,) = tf.compat.v1.import_graph_def(
            graph_def, input_map={input_name: tensor}, return_elements=[output_name], name=name
        )
    return output


@dataclass(frozen=True)
class GraphCut:
    """A frozen subgraph fed by one placeholder: what a notebook-form TensorflowStage saves."""

    graph_def: Any  # tf.compat.v1.GraphDef
    input_ref: str  # tensor names inside graph_def
    output_ref: str
    input_dtype: Any  # tf.DType
    input_shape: Any  # tf.TensorShape, batch dimension included (may be of unknown rank)
    input_name: str  # signature keys
    output_name: str


def signature_key(op_name: str) -> str:
    key = re.sub(r"[^A-Za-z0-9_]", "_", op_name).strip("_") or "tensor"
    return key[-64:].lstrip("_") or "tensor"


def cut_subgraph(sess: Any, input_tensor: Any, output_tensor: Any) -> GraphCut:
    """The part of ``sess.graph`` that computes ``output_tensor`` from ``input_tensor``, frozen.

    Variables are read from the session and become constants (so this must run while the session
    is open); the input is replaced by a fresh placeholder and everything upstream of it is dropped.
    """
    import tensorflow as tf

    graph = sess.graph
    if input_tensor.graph is not graph or output_tensor.graph is not graph:
        raise ValueError("the stage's input and output tensors must belong to the session's graph")
    out_op, in_op = output_tensor.op.name, input_tensor.op.name
    if out_op == in_op:
        raise ValueError("a stage's input and output must be different tensors")
    graph_def = tf.compat.v1.graph_util.extract_sub_graph(graph.as_graph_def(), [out_op])
    if any(node.op in _VARIABLE_OPS for node in graph_def.node):
        graph_def = tf.compat.v1.graph_util.convert_variables_to_constants(sess, graph_def, [out_op])

    refs = {input_tensor.name, f"{in_op}:{input_tensor.value_index}"}
    if input_tensor.value_index == 0:
        refs.add(in_op)
    rewired = tf.compat.v1.GraphDef()
    rewired.versions.CopyFrom(graph_def.versions)
    rewired.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        copy = rewired.node.add()
        copy.CopyFrom(node)
        for i, ref in enumerate(copy.input):
            if ref in refs:
                copy.input[i] = _FEED
            elif ref == f"^{in_op}":
                copy.input[i] = f"^{_FEED}"
    feed = rewired.node.add()
    feed.name, feed.op = _FEED, "Placeholder"
    feed.attr["dtype"].type = input_tensor.dtype.as_datatype_enum
    pruned = tf.compat.v1.graph_util.extract_sub_graph(rewired, [out_op])
    names = {node.name for node in pruned.node}
    if _FEED not in names:
        raise ValueError(
            f"stage output {output_tensor.name} does not depend on its input {input_tensor.name}"
        )
    others = sorted(
        n.name for n in pruned.node if n.op in ("Placeholder", "PlaceholderV2") and n.name != _FEED
    )
    if others:
        raise ValueError(
            f"stage output {output_tensor.name} also depends on placeholder(s) {', '.join(others)}, "
            f"not only on the stage input {input_tensor.name}"
        )
    return GraphCut(
        graph_def=pruned,
        input_ref=f"{_FEED}:0",
        output_ref=output_tensor.name,
        input_dtype=input_tensor.dtype,
        input_shape=input_tensor.shape,
        input_name=signature_key(in_op),
        output_name=signature_key(out_op),
    )


def function_from_cut(cut: GraphCut) -> Any:
    """A TF2 concrete function computing ``cut`` (call in eager mode)."""
    import tensorflow as tf

    def imports() -> None:
        tf.compat.v1.import_graph_def(cut.graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imports, [])
    return wrapped.prune(
        feeds=[wrapped.graph.get_tensor_by_name(cut.input_ref)],
        fetches=wrapped.graph.get_tensor_by_name(cut.output_ref),
    )
