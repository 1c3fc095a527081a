"""Import a Keras featurizer into the compiler's float op graph.

Role: the only place that reads Keras layers. It walks a functional or Sequential Keras 3 model
in topological order, turns each supported layer into one float ``GraphOp`` with its weights as
numpy arrays and concrete NHWC shapes, and refuses anything else by layer name and type.
Called by ``fpgaserve.compiler.compile``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SUPPORTED_LAYERS", "Graph", "GraphOp", "UnsupportedLayerError", "import_keras"]

F32 = npt.NDArray[np.float32]
SUPPORTED_LAYERS = (
    "InputLayer", "Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization", "ReLU", "Activation",
    "Add", "ZeroPadding2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "Flatten",
    "Reshape", "Dropout", "Identity",
)  # fmt: skip


class UnsupportedLayerError(ValueError):
    """A layer (or a layer option) the FPGA compiler cannot map onto the device."""


@dataclass
class GraphOp:
    kind: str
    name: str
    inputs: list[str]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)
    weight: F32 | None = None
    bias: F32 | None = None
    scale: F32 | None = None
    shift: F32 | None = None


@dataclass
class Graph:
    input_name: str
    input_shape: tuple[int, ...]
    output_name: str
    ops: list[GraphOp]
    shapes: dict[str, tuple[int, ...]]

    def consumers(self, tensor: str) -> list[GraphOp]:
        return [op for op in self.ops if tensor in op.inputs]


def _same_pads(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TensorFlow's 'same' padding: output size and the (before, after) pads (extra goes after)."""
    out = ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def _window(
    name: str, shape: tuple[int, ...], k: tuple[int, int], s: tuple[int, int], padding: str
) -> tuple[tuple[int, int], list[int]]:
    h, w = shape[0], shape[1]
    if padding == "same":
        ho, t, b = _same_pads(h, k[0], s[0])
        wo, left, r = _same_pads(w, k[1], s[1])
        return (ho, wo), [t, b, left, r]
    if padding == "valid":
        if h < k[0] or w < k[1]:
            raise UnsupportedLayerError(f"layer {name!r}: input {h}x{w} is smaller than its window {k}")
        return ((h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1), [0, 0, 0, 0]
    raise UnsupportedLayerError(f"layer {name!r}: padding {padding!r} is not supported")


def _activation_name(name: str, act: Any) -> str:
    act = act if isinstance(act, str) else getattr(act, "__name__", str(act))
    if act in ("linear", "relu", "relu6"):
        return str(act)
    raise UnsupportedLayerError(
        f"layer {name!r}: activation {act!r} is not supported on the device (use relu, relu6 or linear)"
    )


def _inbound(layer_cfg: dict[str, Any]) -> list[str]:
    """Names of the layers feeding a layer, from its serialized inbound node."""
    nodes = layer_cfg.get("inbound_nodes", [])
    if len(nodes) > 1:
        raise UnsupportedLayerError(f"layer {layer_cfg['name']!r} is shared (called more than once)")
    names: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict) and v.get("class_name") == "__keras_tensor__":
            history = v["config"]["keras_history"]
            if history[1] != 0 or history[2] != 0:
                raise UnsupportedLayerError(
                    f"layer {layer_cfg['name']!r} uses a shared or multi-output layer"
                )
            names.append(history[0])
        elif isinstance(v, list | tuple):
            for item in v:
                walk(item)

    for node in nodes:
        walk(node.get("args", []))
    return names


def _layer_plan(model: Any) -> tuple[list[tuple[Any, list[str]]], str, str]:
    """(layer, input layer names) in topological order, plus the input and output layer names."""
    cfg = model.get_config()
    by_name = {layer.name: layer for layer in model.layers}
    if "input_layers" in cfg:  # functional
        ins, outs = cfg["input_layers"], cfg["output_layers"]
        ins = ins if isinstance(ins[0], list) else [ins]
        outs = outs if isinstance(outs[0], list) else [outs]
        if len(ins) != 1 or len(outs) != 1:
            raise UnsupportedLayerError("the featurizer must have exactly one input and one output")
        plan = [(by_name[lc["name"]], _inbound(lc)) for lc in cfg["layers"]]
        return plan, ins[0][0], outs[0][0]
    # Sequential: a chain; its input layer is implicit.
    plan = []
    prev = "input"
    for layer in model.layers:
        plan.append((layer, [prev]))
        prev = layer.name
    return plan, "input", prev


def _convert(layer: Any, inputs: list[str], shapes: dict[str, tuple[int, ...]]) -> GraphOp | None:
    """One Keras layer -> one float op (None for identities). Fills ``shapes`` for its output."""
    cls, name = type(layer).__name__, layer.name
    cfg = layer.get_config()
    src = inputs[0] if inputs else ""
    shape = shapes.get(src, ())
    out = name

    def set_shape(s: tuple[int, ...]) -> None:
        shapes[out] = tuple(int(d) for d in s)

    if cls in ("Dropout", "Identity"):
        shapes[out] = shape
        return GraphOp("identity", name, [src], out)
    if cls in ("Conv2D", "DepthwiseConv2D"):
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise UnsupportedLayerError(f"layer {name!r} ({cls}): only channels_last is supported")
        if tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1) or cfg.get("groups", 1) != 1:
            raise UnsupportedLayerError(f"layer {name!r} ({cls}): dilation and groups are not supported")
        if len(shape) != 3:
            raise UnsupportedLayerError(f"layer {name!r} ({cls}) needs an NHWC input, got shape {shape}")
        weights = layer.get_weights()
        kernel = np.asarray(weights[0], np.float32)
        bias = np.asarray(weights[1], np.float32) if cfg.get("use_bias", True) else None
        k = (kernel.shape[0], kernel.shape[1])
        s = tuple(cfg["strides"])
        (ho, wo), pads = _window(name, shape, k, s, cfg["padding"])
        attrs: dict[str, Any] = {
            "strides": list(s), "pads": pads, "activation": _activation_name(name, cfg["activation"]),
        }  # fmt: skip
        if s[0] != s[1]:
            raise UnsupportedLayerError(f"layer {name!r} ({cls}): strides must be equal, got {s}")
        if cls == "DepthwiseConv2D":
            if kernel.shape[3] != 1:
                raise UnsupportedLayerError(f"layer {name!r}: depth_multiplier must be 1")
            set_shape((ho, wo, shape[2]))
            return GraphOp("depthwise_conv2d", name, [src], out, attrs, kernel[:, :, :, 0].copy(), bias)
        set_shape((ho, wo, kernel.shape[3]))
        return GraphOp("conv2d", name, [src], out, attrs, kernel, bias)
    if cls == "Dense":
        if len(shape) != 1:
            raise UnsupportedLayerError(f"layer {name!r} (Dense) needs a flat input, got shape {shape}")
        weights = layer.get_weights()
        bias = np.asarray(weights[1], np.float32) if cfg.get("use_bias", True) else None
        set_shape((weights[0].shape[1],))
        attrs = {"activation": _activation_name(name, cfg["activation"])}
        return GraphOp("dense", name, [src], out, attrs, np.asarray(weights[0], np.float32), bias)
    if cls == "BatchNormalization":
        axis = cfg["axis"]
        axis = axis[0] if isinstance(axis, list | tuple) and len(axis) == 1 else axis
        if axis not in (-1, len(shape)):
            raise UnsupportedLayerError(f"layer {name!r}: BatchNormalization must normalise the last axis")
        c = shape[-1]
        gamma = np.asarray(layer.gamma.numpy(), np.float64) if cfg.get("scale", True) else np.ones(c)
        beta = np.asarray(layer.beta.numpy(), np.float64) if cfg.get("center", True) else np.zeros(c)
        mean = np.asarray(layer.moving_mean.numpy(), np.float64)
        var = np.asarray(layer.moving_variance.numpy(), np.float64)
        scale = gamma / np.sqrt(var + cfg["epsilon"])
        shapes[out] = shape
        return GraphOp(
            "scale_shift", name, [src], out, {"activation": "linear"},
            scale=scale.astype(np.float32), shift=(beta - mean * scale).astype(np.float32),
        )  # fmt: skip
    if cls == "ReLU":
        mv = cfg.get("max_value")
        if (
            cfg.get("negative_slope", 0.0) != 0.0
            or cfg.get("threshold", 0.0) != 0.0
            or mv not in (None, 6, 6.0)
        ):
            raise UnsupportedLayerError(f"layer {name!r} (ReLU): only plain ReLU and ReLU6 are supported")
        shapes[out] = shape
        return GraphOp("activation", name, [src], out, {"activation": "relu" if mv is None else "relu6"})
    if cls == "Activation":
        act = _activation_name(name, cfg["activation"])
        shapes[out] = shape
        return None if act == "linear" else GraphOp("activation", name, [src], out, {"activation": act})
    if cls == "Add":
        if len({shapes[i] for i in inputs}) != 1:
            raise UnsupportedLayerError(f"layer {name!r} (Add): broadcasting adds are not supported")
        shapes[out] = shape
        return GraphOp("add", name, list(inputs), out, {"activation": "linear"})
    if cls == "ZeroPadding2D":
        (t, b), (left, r) = cfg["padding"]
        set_shape((shape[0] + t + b, shape[1] + left + r, shape[2]))
        return GraphOp("pad", name, [src], out, {"pads": [t, b, left, r]})
    if cls in ("MaxPooling2D", "AveragePooling2D"):
        k = tuple(cfg["pool_size"])
        s = tuple(cfg["strides"] or k)
        (ho, wo), pads = _window(name, shape, k, s, cfg["padding"])
        if cls == "AveragePooling2D" and any(pads):
            raise UnsupportedLayerError(
                f"layer {name!r}: AveragePooling2D with 'same' padding is not supported"
            )
        set_shape((ho, wo, shape[2]))
        kind = "max_pool" if cls == "MaxPooling2D" else "avg_pool"
        return GraphOp(kind, name, [src], out, {"pool": list(k), "strides": list(s), "pads": pads})
    if cls == "GlobalAveragePooling2D":
        keep = bool(cfg.get("keepdims", False))
        set_shape((1, 1, shape[2]) if keep else (shape[2],))
        return GraphOp("global_avg_pool", name, [src], out, {"keepdims": keep})
    if cls in ("Flatten", "Reshape"):
        target = (int(np.prod(shape)),) if cls == "Flatten" else tuple(cfg["target_shape"])
        if -1 in target:
            known = int(np.prod([d for d in target if d != -1]))
            target = tuple(int(np.prod(shape)) // known if d == -1 else d for d in target)
        if int(np.prod(target)) != int(np.prod(shape)):
            raise UnsupportedLayerError(f"layer {name!r}: cannot reshape {shape} to {target}")
        set_shape(target)
        return GraphOp("reshape", name, [src], out)
    raise UnsupportedLayerError(
        f"layer {name!r} of type {cls} is not supported by the FPGA compiler; "
        f"supported layer types: {', '.join(SUPPORTED_LAYERS)}"
    )


def import_keras(model: Any, *, input_shape: tuple[int, ...] | None = None) -> Graph:
    """Read a Keras featurizer into a float ``Graph`` with concrete per-example shapes."""
    if type(model).__name__ not in ("Functional", "Sequential", "Model"):
        raise UnsupportedLayerError(
            f"model type {type(model).__name__} is not supported; use a functional model"
        )
    declared = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else ()
    shape = tuple(input_shape) if input_shape is not None else declared
    if not shape or any(d is None for d in shape):
        raise ValueError(
            f"the model's input shape {declared} is not fully defined; pass input_shape=(H, W, C)"
        )
    plan, in_name, out_name = _layer_plan(model)
    shapes: dict[str, tuple[int, ...]] = {in_name: tuple(int(d) for d in shape)}
    ops: list[GraphOp] = []
    rename: dict[str, str] = {}
    for layer, inputs in plan:
        if type(layer).__name__ == "InputLayer":
            continue
        if type(layer).__name__ in ("Functional", "Sequential"):
            raise UnsupportedLayerError(f"layer {layer.name!r} is a nested model; flatten it into one model")
        inputs = [rename.get(i, i) for i in inputs]
        op = _convert(layer, inputs, shapes)
        if op is None or op.kind == "identity":
            rename[layer.name] = inputs[0]
            continue
        ops.append(op)
    out = rename.get(out_name, out_name)
    return Graph(input_name=in_name, input_shape=shapes[in_name], output_name=out, ops=ops, shapes=shapes)
