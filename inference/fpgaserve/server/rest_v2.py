"""The Open Inference Protocol v2 (KServe / Triton REST), with Triton's binary tensor extension.

Role: a thin face over the data plane. ``BYTES`` inputs carry encoded images (base64 strings in
JSON, or raw length-prefixed elements in the binary extension that ``tritonclient.http`` uses by
default); ``FP32`` inputs carry tensors for models that take them. Outputs are ``FP32``, as JSON or,
when asked for (``binary_data_output`` / ``binary_data``), as raw little-endian bytes after the JSON
header with ``Inference-Header-Content-Length``. The classification extension (output parameter
``classification: k``) answers ``BYTES`` strings ``value:index:label`` of the ``k`` best classes
per input instead, as JSON strings or binary elements.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fpgaserve.runtime.protocol import ModelRuntime, TensorSpec
from fpgaserve.server.batch_requests import Item
from fpgaserve.server.codec import (
    V2_DATATYPES,
    check_shape,
    classification_strings,
    decode_base64,
    floats_json,
    pack_bytes_elements,
    unpack_bytes_elements,
)
from fpgaserve.server.errors import InvalidRequest, ModelNotReady
from fpgaserve.server.rest_common import (
    DATAPLANE_KEY,
    json_text,
    json_text_response,
    package_version,
    parse_json,
    read_body,
)

__all__ = ["InferenceRequest", "routes"]

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = V2_DATATYPES


class _Tensor(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    shape: list[int] = Field(min_length=1)
    datatype: str
    parameters: dict[str, Any] | None = None
    data: Any = None


class _RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """``POST /v2/models/{name}/infer`` body (the JSON part)."""

    model_config = ConfigDict(extra="ignore")
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[_Tensor] = Field(min_length=1)
    outputs: list[_RequestedOutput] | None = None


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v2", server_metadata),
        web.get("/v2/health/live", live),
        web.get("/v2/health/ready", ready),
        web.get("/v2/models/{name}", model_metadata),
        web.get("/v2/models/{name}/versions/{version}", model_metadata),
        web.get("/v2/models/{name}/ready", model_ready),
        web.get("/v2/models/{name}/versions/{version}/ready", model_ready),
        web.post("/v2/models/{name}/infer", infer),
        web.post("/v2/models/{name}/versions/{version}/infer", infer),
    ]


async def server_metadata(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "name": "fpgaserve",
            "version": package_version(),
            "extensions": ["binary_tensor_data", "classification"],
        }
    )


async def live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    plane = request.app[DATAPLANE_KEY]
    if not plane.ready:  # loading, failed or draining
        raise ModelNotReady(plane.not_ready_reason())
    return web.json_response({"ready": True})


def _model(request: web.Request) -> ModelRuntime:
    info = request.match_info
    return request.app[DATAPLANE_KEY].model(info["name"], version=info.get("version"))


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    shape = [-1, *(-1 if d is None else d for d in spec.shape)]
    return {"name": spec.name, "datatype": DATATYPES[spec.dtype], "shape": shape}


async def model_metadata(request: web.Request) -> web.Response:
    runtime = _model(request)
    return web.json_response(
        {
            "name": runtime.name,
            "versions": [runtime.version],
            "platform": "fpgaserve",
            "inputs": [_tensor_metadata(runtime.input_spec)],
            "outputs": [_tensor_metadata(runtime.output_spec)],
        }
    )


async def model_ready(request: web.Request) -> web.Response:
    runtime = _model(request)  # raises ModelNotReady (503) until loaded and warmed up
    plane = request.app[DATAPLANE_KEY]
    if not plane.ready:  # draining: still answers, but is not ready for more
        raise ModelNotReady(plane.not_ready_reason())
    return web.json_response({"name": runtime.name, "ready": True})


async def infer(request: web.Request) -> web.Response:
    plane = request.app[DATAPLANE_KEY]
    runtime = _model(request)
    body = await read_body(request)
    header, binary = _split_body(body, request.headers.get(HEADER_LENGTH))
    try:
        req = InferenceRequest.model_validate(parse_json(header))
    except ValidationError as exc:
        raise InvalidRequest(f"not an inference request: {_first_error(exc)}") from None
    items = _inputs(req, binary, runtime.input_spec)
    want_binary, top_k = _requested_output(req, runtime.output_spec)
    result = await plane.infer(items)
    outputs = np.ascontiguousarray(result.outputs, dtype="<f4")
    document: dict[str, Any] = {"model_name": runtime.name, "model_version": runtime.version}
    if req.id is not None:
        document["id"] = req.id
    if top_k is not None:
        return _classification_response(document, outputs, runtime, top_k=top_k, binary=want_binary)
    output: dict[str, Any] = {
        "name": runtime.output_spec.name,
        "datatype": "FP32",
        "shape": list(outputs.shape),
    }
    if not want_binary:
        output_text = json_text(output, data=floats_json(outputs.reshape(-1)))
        return json_text_response(json_text(document, outputs=f"[{output_text}]"))
    return _binary_response(document, output, outputs.tobytes())


def _binary_response(document: dict[str, Any], output: dict[str, Any], raw: bytes) -> web.Response:
    output["parameters"] = {"binary_data_size": len(raw)}
    document["outputs"] = [output]
    head = json.dumps(document).encode()
    return web.Response(
        body=head + raw,
        content_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(head))},
    )


def _classification_response(
    document: dict[str, Any],
    outputs: npt.NDArray[np.float32],
    runtime: ModelRuntime,
    *,
    top_k: int,
    binary: bool,
) -> web.Response:
    """The classification extension: the ``top_k`` best classes per input as BYTES strings."""
    strings = classification_strings(outputs, runtime.labels, k=top_k)
    per_input = len(strings) // max(outputs.shape[0], 1)
    output: dict[str, Any] = {
        "name": runtime.output_spec.name,
        "datatype": "BYTES",
        "shape": [outputs.shape[0], per_input],
    }
    if binary:
        return _binary_response(document, output, pack_bytes_elements(strings))
    output["data"] = [s.decode() for s in strings]
    document["outputs"] = [output]
    return web.json_response(document)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "body"
    return f"{where}: {error['msg']}"


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidRequest(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
    if not 0 < length <= len(body):
        raise InvalidRequest(f"{HEADER_LENGTH} {length} is outside the body's {len(body)} bytes")
    return body[:length], body[length:]


def _requested_output(req: InferenceRequest, spec: TensorSpec) -> tuple[bool, int | None]:
    """Whether the output goes as binary data, and the ``k`` of the classification extension."""
    for wanted in req.outputs or []:
        if wanted.name != spec.name:
            raise InvalidRequest(f"unknown output {wanted.name!r}; this model has one output, {spec.name!r}")
        parameters = wanted.parameters or {}
        binary = bool(parameters.get("binary_data", False))
        k = parameters.get("classification")
        if k is None:
            return binary, None
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidRequest(f"classification is the number of best classes to return (>= 1), got {k!r}")
        return binary, k
    return bool((req.parameters or {}).get("binary_data_output", False)), None


def _inputs(req: InferenceRequest, binary: bytes, spec: TensorSpec) -> list[Item]:
    if len(req.inputs) != 1 or req.inputs[0].name != spec.name:
        names = [t.name for t in req.inputs]
        raise InvalidRequest(f"this model takes one input named {spec.name!r}, got {names}")
    tensor = req.inputs[0]
    expected = DATATYPES[spec.dtype]
    if tensor.datatype != expected:
        raise InvalidRequest(f"input {spec.name!r} has datatype {expected}, got {tensor.datatype!r}")
    shape = tensor.shape
    if any(d < 0 for d in shape) or shape[0] < 1:
        raise InvalidRequest(f"input shape {shape} must be non-negative with a batch of at least 1")
    check_shape(tuple(shape[1:]), spec, index=0)
    count = math.prod(shape)
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or not 0 <= size <= len(binary) or tensor.data is not None:
            raise InvalidRequest(
                f"binary_data_size {size!r} does not fit the {len(binary)} bytes after the header"
            )
        raw = binary[:size]
        elements: list[Any] | npt.NDArray[np.float32] = (
            unpack_bytes_elements(raw) if expected == "BYTES" else _unpack_numbers(raw, expected)
        )
    else:
        if tensor.data is None:
            raise InvalidRequest(f"input {spec.name!r} has neither data nor binary_data_size")
        elements = _flatten(tensor.data)
    if len(elements) != count:
        raise InvalidRequest(
            f"input {spec.name!r} of shape {shape} needs {count} elements, got {len(elements)}"
        )
    batch = shape[0]
    if expected == "BYTES":
        if batch != count:
            raise InvalidRequest("BYTES inputs hold one encoded image per batch entry")
        return [e if isinstance(e, bytes) else decode_base64(e, index=i) for i, e in enumerate(elements)]
    try:
        array = np.asarray(elements, dtype=np.float32).reshape(shape)
    except (TypeError, ValueError, OverflowError):
        raise InvalidRequest(f"input {spec.name!r} data must be numbers") from None
    if not np.isfinite(array).all():
        raise InvalidRequest(f"input {spec.name!r} data must be finite numbers")
    return list(array)


def _flatten(data: Any) -> list[Any]:
    """Row-major elements of a nested list (iterative: JSON may nest deeper than the stack)."""
    flat: list[Any] = []
    stack = [iter([data])]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _unpack_numbers(raw: bytes, datatype: str) -> npt.NDArray[np.float32]:
    dtype = np.dtype("<f4") if datatype == "FP32" else np.dtype("<i8")
    if len(raw) % dtype.itemsize:
        raise InvalidRequest(f"binary {datatype} data of {len(raw)} bytes is not a whole number of elements")
    return np.frombuffer(raw, dtype=dtype).astype(np.float32)
