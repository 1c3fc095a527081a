"""TensorFlow Serving's gRPC API: ``tensorflow.serving.PredictionService`` Predict and GetModelMetadata.

Role: a thin face over the data plane, the gRPC twin of ``rest_tfserving`` (``grpc_server``
registers it), answering the way Brainwave's ``PredictionClient`` called it: one input named
``images`` (its default) or by the model's input name, a ``DT_STRING`` tensor of encoded images of
shape ``[N]`` (or ``DT_FLOAT`` ``[N, ...]`` for tensor models), the key in ``authorization``
metadata. The class probabilities come back as a ``DT_FLOAT`` tensor ``[N, classes]`` under the
model's output name and under ``output_alias`` (Brainwave's default output name), or under the
names of ``output_filter`` when given.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from fpgaserve.runtime.protocol import InvalidInput, ModelRuntime, TensorSpec
from fpgaserve.server.batch_requests import Item
from fpgaserve.server.codec import check_shape
from fpgaserve.server.errors import InvalidRequest
from fpgaserve.server.grpc_common import GrpcServices, Method, unary_method
from fpgaserve.server.grpc_messages import tf, tfs

__all__ = ["BRAINWAVE_INPUT", "BRAINWAVE_OUTPUT", "SERVICE", "handler"]

SERVICE = "tensorflow.serving.PredictionService"
BRAINWAVE_INPUT = "images"
BRAINWAVE_OUTPUT = "output_alias"
SIGNATURE = "serving_default"

# tensorflow.DataType values (tensorflow_framework.proto).
DT_FLOAT, DT_STRING = 1, 7
_DTYPES = {"string": DT_STRING, "float32": DT_FLOAT, "int64": 9}


def handler(services: GrpcServices) -> grpc.GenericRpcHandler:
    methods: dict[str, tuple[Method, str]] = {
        "Predict": (predict, "Predict"),
        "GetModelMetadata": (get_model_metadata, "GetModelMetadata"),
    }
    handlers = {
        name: unary_method(
            method,
            full_name=f"/{SERVICE}/{name}",
            services=services,
            request_class=tfs(f"{message}Request"),
            response_class=tfs(f"{message}Response"),
        )
        for name, (method, message) in methods.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def _model(services: GrpcServices, spec: Any) -> ModelRuntime:
    if not spec.name:
        raise InvalidRequest("model_spec.name is required: the name of the model served here")
    version = None
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        version = str(spec.version.value)
    elif choice == "version_label":
        version = spec.version_label
    return services.plane.model(spec.name, version=version)


def _model_spec(runtime: ModelRuntime) -> Any:
    spec = tfs("ModelSpec")(name=runtime.name, signature_name=SIGNATURE)
    if runtime.version.isdigit():
        spec.version.value = int(runtime.version)
    else:
        spec.version_label = runtime.version
    return spec


def _check_signature(spec: Any) -> None:
    if spec.signature_name not in ("", SIGNATURE):
        raise InvalidRequest(f"unknown signature {spec.signature_name!r}; this model has {SIGNATURE!r}")


async def predict(request: Any, services: GrpcServices) -> Any:
    runtime = _model(services, request.model_spec)
    _check_signature(request.model_spec)
    spec = runtime.input_spec
    names = list(request.inputs)
    if len(names) != 1 or names[0] not in (BRAINWAVE_INPUT, spec.name):
        raise InvalidRequest(
            f"send one input, named {BRAINWAVE_INPUT!r} or {spec.name!r}; got {sorted(names)}"
        )
    items = _items(request.inputs[names[0]], spec)
    wanted = list(request.output_filter) or [runtime.output_spec.name, BRAINWAVE_OUTPUT]
    for name in wanted:
        if name not in (runtime.output_spec.name, BRAINWAVE_OUTPUT):
            raise InvalidRequest(
                f"unknown output {name!r} in output_filter; this model has {runtime.output_spec.name!r}"
            )
    result = await services.plane.infer(items)
    outputs = np.ascontiguousarray(result.outputs, dtype="<f4")
    tensor = tf("TensorProto")(dtype=DT_FLOAT, tensor_content=outputs.tobytes())
    tensor.tensor_shape.dim.extend(tf("TensorShapeProto.Dim")(size=d) for d in outputs.shape)
    response = tfs("PredictResponse")(model_spec=_model_spec(runtime))
    for name in dict.fromkeys(wanted):
        response.outputs[name].CopyFrom(tensor)
    return response


def _items(tensor: Any, spec: TensorSpec) -> list[Item]:
    dims = [d.size for d in tensor.tensor_shape.dim]
    if spec.dtype == "string":
        if tensor.dtype != DT_STRING:
            raise InvalidRequest(
                f"input {spec.name!r} takes DT_STRING (encoded images), got dtype {tensor.dtype}"
            )
        images = list(tensor.string_val)
        if not images:
            raise InvalidRequest("the input holds no images: put one encoded image per entry in string_val")
        if dims and (len(dims) != 1 or dims[0] not in (-1, len(images))):
            raise InvalidRequest(
                f"a DT_STRING input of {len(images)} images has shape [{len(images)}], got {dims}"
            )
        for index, image in enumerate(images):
            if not image:
                raise InvalidInput("an empty image; send the encoded image's bytes", index=index)
        return images
    if tensor.dtype != DT_FLOAT:
        raise InvalidRequest(f"input {spec.name!r} takes DT_FLOAT tensors, got dtype {tensor.dtype}")
    if not dims or dims[0] < 1 or any(d < 0 for d in dims):
        raise InvalidRequest(f"a DT_FLOAT input has shape [N, ...] with N >= 1, got {dims}")
    check_shape(tuple(dims[1:]), spec, index=0)
    if tensor.tensor_content:
        if len(tensor.tensor_content) % 4:
            raise InvalidRequest("tensor_content is not a whole number of float32 values")
        values = np.frombuffer(tensor.tensor_content, dtype="<f4")
    else:
        values = np.asarray(tensor.float_val, dtype=np.float32)
    count = int(np.prod(dims))
    if values.size == 1 and count > 1:
        values = np.full(count, values[0], dtype=np.float32)  # TF's own rule: one value fills the shape
    if values.size != count:
        raise InvalidRequest(f"a DT_FLOAT input of shape {dims} needs {count} values, got {values.size}")
    array = values.astype(np.float32).reshape(dims)
    if not np.isfinite(array).all():
        raise InvalidRequest(f"input {spec.name!r} data must be finite numbers")
    return list(array)


def _tensor_info(spec: TensorSpec) -> Any:
    info = tf("TensorInfo")(name=spec.name, dtype=_DTYPES[spec.dtype])
    dims = [-1, *(-1 if d is None else d for d in spec.shape)]
    info.tensor_shape.dim.extend(tf("TensorShapeProto.Dim")(size=d) for d in dims)
    return info


async def get_model_metadata(request: Any, services: GrpcServices) -> Any:
    runtime = _model(services, request.model_spec)
    fields = list(request.metadata_field)
    if fields != ["signature_def"]:
        raise InvalidRequest(
            f'metadata_field must be ["signature_def"] (the only metadata served), got {fields}'
        )
    signature = tf("SignatureDef")(method_name="tensorflow/serving/predict")
    signature.inputs[runtime.input_spec.name].CopyFrom(_tensor_info(runtime.input_spec))
    signature.outputs[runtime.output_spec.name].CopyFrom(_tensor_info(runtime.output_spec))
    signatures = tfs("SignatureDefMap")()
    signatures.signature_def[SIGNATURE].CopyFrom(signature)
    response = tfs("GetModelMetadataResponse")(model_spec=_model_spec(runtime))
    packed = response.metadata["signature_def"]
    packed.type_url = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    packed.value = signatures.SerializeToString()
    return response
