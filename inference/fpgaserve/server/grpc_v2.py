"""The Open Inference Protocol v2 over gRPC: ``inference.GRPCInferenceService``.

Role: a thin face over the data plane, the gRPC twin of ``rest_v2`` (``grpc_server`` registers
it). ``BYTES`` inputs carry encoded images, one per batch entry, in ``contents.bytes_contents`` or
in ``raw_input_contents`` (Triton's length-prefixed layout, what ``tritonclient.grpc`` sends);
``FP32`` inputs carry tensors. Outputs are ``FP32`` in ``raw_output_contents`` (little-endian), or
with the classification extension (output parameter ``classification: k``) ``BYTES`` strings
``value:index:label`` of the ``k`` best classes per input.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import numpy as np

from fpgaserve.runtime.protocol import ModelRuntime, TensorSpec
from fpgaserve.server.batch_requests import Item
from fpgaserve.server.codec import (
    V2_DATATYPES,
    check_shape,
    classification_strings,
    pack_bytes_elements,
    unpack_bytes_elements,
)
from fpgaserve.server.errors import InvalidRequest, ModelNotReady
from fpgaserve.server.grpc_common import GrpcServices, Method, unary_method
from fpgaserve.server.grpc_messages import oip
from fpgaserve.server.rest_common import package_version

__all__ = ["SERVICE", "handler"]

SERVICE = "inference.GRPCInferenceService"
EXTENSIONS = ["classification"]


def handler(services: GrpcServices) -> grpc.GenericRpcHandler:
    """The service's method handlers; liveness and readiness answer without a key, as on HTTP."""
    methods: dict[str, tuple[Method, str, bool]] = {
        "ServerLive": (server_live, "ServerLive", True),
        "ServerReady": (server_ready, "ServerReady", True),
        "ModelReady": (model_ready, "ModelReady", False),
        "ServerMetadata": (server_metadata, "ServerMetadata", False),
        "ModelMetadata": (model_metadata, "ModelMetadata", False),
        "ModelInfer": (model_infer, "ModelInfer", False),
    }
    handlers = {
        name: unary_method(
            method,
            full_name=f"/{SERVICE}/{name}",
            services=services,
            request_class=oip(f"{message}Request"),
            response_class=oip(f"{message}Response"),
            open_method=open_method,
        )
        for name, (method, message, open_method) in methods.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


async def server_live(request: Any, services: GrpcServices) -> Any:
    return oip("ServerLiveResponse")(live=True)


async def server_ready(request: Any, services: GrpcServices) -> Any:
    return oip("ServerReadyResponse")(ready=services.plane.ready)


def _model(services: GrpcServices, name: str, version: str) -> ModelRuntime:
    # proto3 strings are never absent: empty means "not given" (the server's one model, its version).
    return services.plane.model(name or None, version=version or None)


async def model_ready(request: Any, services: GrpcServices) -> Any:
    try:
        _model(services, request.name, request.version)
    except ModelNotReady:
        return oip("ModelReadyResponse")(ready=False)
    return oip("ModelReadyResponse")(ready=True)


async def server_metadata(request: Any, services: GrpcServices) -> Any:
    return oip("ServerMetadataResponse")(name="fpgaserve", version=package_version(), extensions=EXTENSIONS)


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    shape = [-1, *(-1 if d is None else d for d in spec.shape)]
    return {"name": spec.name, "datatype": V2_DATATYPES[spec.dtype], "shape": shape}


async def model_metadata(request: Any, services: GrpcServices) -> Any:
    runtime = _model(services, request.name, request.version)
    return oip("ModelMetadataResponse")(
        name=runtime.name,
        versions=[runtime.version],
        platform="fpgaserve",
        inputs=[_tensor_metadata(runtime.input_spec)],
        outputs=[_tensor_metadata(runtime.output_spec)],
    )


async def model_infer(request: Any, services: GrpcServices) -> Any:
    runtime = _model(services, request.model_name, request.model_version)
    items = _inputs(request, runtime.input_spec)
    top_k = _classification(request, runtime.output_spec)
    result = await services.plane.infer(items)
    response = oip("ModelInferResponse")(
        model_name=runtime.name, model_version=runtime.version, id=request.id
    )
    outputs = np.ascontiguousarray(result.outputs, dtype="<f4")
    output = response.outputs.add(name=runtime.output_spec.name)
    if top_k is None:
        output.datatype = "FP32"
        output.shape.extend(outputs.shape)
        response.raw_output_contents.append(outputs.tobytes())
    else:
        strings = classification_strings(outputs, runtime.labels, k=top_k)
        output.datatype = "BYTES"
        output.shape.extend([outputs.shape[0], len(strings) // max(outputs.shape[0], 1)])
        response.raw_output_contents.append(pack_bytes_elements(strings))
    return response


def _classification(request: Any, spec: TensorSpec) -> int | None:
    """The ``k`` of the classification extension, when the request asks for it."""
    for wanted in request.outputs:
        if wanted.name != spec.name:
            raise InvalidRequest(f"unknown output {wanted.name!r}; this model has one output, {spec.name!r}")
        if "classification" in wanted.parameters:
            parameter = wanted.parameters["classification"]
            if parameter.WhichOneof("parameter_choice") not in ("int64_param", "uint64_param"):
                raise InvalidRequest("the classification parameter is the number of classes, an integer")
            k = int(getattr(parameter, parameter.WhichOneof("parameter_choice")))
            if k < 1:
                raise InvalidRequest(f"classification asks for the top k classes; k must be >= 1, got {k}")
            return k
    return None


def _inputs(request: Any, spec: TensorSpec) -> list[Item]:
    if len(request.inputs) != 1 or request.inputs[0].name != spec.name:
        names = [t.name for t in request.inputs]
        raise InvalidRequest(f"this model takes one input named {spec.name!r}, got {names}")
    tensor = request.inputs[0]
    expected = V2_DATATYPES[spec.dtype]
    if tensor.datatype != expected:
        raise InvalidRequest(f"input {spec.name!r} has datatype {expected}, got {tensor.datatype!r}")
    shape = list(tensor.shape)
    if not shape or any(d < 0 for d in shape) or shape[0] < 1:
        raise InvalidRequest(f"input shape {shape} must be non-negative with a batch of at least 1")
    check_shape(tuple(shape[1:]), spec, index=0)
    count = math.prod(shape)
    raw = list(request.raw_input_contents)
    if len(raw) > 1:
        raise InvalidRequest(f"raw_input_contents holds {len(raw)} entries; this model has one input")
    elements: list[bytes] | np.ndarray[Any, np.dtype[np.float32]]
    if raw:
        if expected == "BYTES":
            elements = unpack_bytes_elements(raw[0])
        else:
            if len(raw[0]) % 4:
                raise InvalidRequest(
                    f"raw FP32 data of {len(raw[0])} bytes is not a whole number of elements"
                )
            elements = np.frombuffer(raw[0], dtype="<f4").astype(np.float32)
    elif expected == "BYTES":
        elements = list(tensor.contents.bytes_contents)
    else:
        elements = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
    if len(elements) != count:
        raise InvalidRequest(
            f"input {spec.name!r} of shape {shape} needs {count} elements, got {len(elements)}"
        )
    if expected == "BYTES":
        if shape[0] != count:
            raise InvalidRequest("BYTES inputs hold one encoded image per batch entry")
        return list(elements)
    array = np.asarray(elements, dtype=np.float32).reshape(shape)
    if not np.isfinite(array).all():
        raise InvalidRequest(f"input {spec.name!r} data must be finite numbers")
    return list(array)
