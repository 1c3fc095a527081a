"""The TensorFlow Serving REST API: ``:predict`` and model status/metadata.

Role: a thin face over the data plane for clients written against TF Serving. ``instances`` (row
format) or ``inputs`` (columnar); an image is ``{"b64": "<base64>"}``, optionally under the input's
name (``{"image": {"b64": ...}}``); tensors are nested lists. Answers ``{"predictions": [...]}``
(rows) or ``{"outputs": [...]}`` (columnar), as TF Serving does.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fpgaserve.runtime.protocol import InvalidInput, ModelRuntime, TensorSpec
from fpgaserve.server.batch_requests import Item
from fpgaserve.server.codec import decode_base64, floats_json, to_float_input
from fpgaserve.server.errors import InvalidRequest
from fpgaserve.server.rest_common import DATAPLANE_KEY, json_text, json_text_response, read_json

__all__ = ["routes"]

_TF_DTYPES = {"string": "DT_STRING", "float32": "DT_FLOAT", "int64": "DT_INT64"}


# Names and versions hold no ':' so that ".../versions/1:predict" is never read as version
# "1:predict" by the status route (a GET there is 405, not a status answer).
_NAME, _VERSION = "{name:[^/:]+}", "{version:[^/:]+}"


def routes() -> list[web.RouteDef]:
    return [
        web.post(f"/v1/models/{_NAME}:predict", predict),
        web.post(f"/v1/models/{_NAME}/versions/{_VERSION}:predict", predict),
        web.get(f"/v1/models/{_NAME}", status),
        web.get(f"/v1/models/{_NAME}/versions/{_VERSION}", status),
        web.get(f"/v1/models/{_NAME}/metadata", model_metadata),
    ]


def _model(request: web.Request) -> ModelRuntime:
    info = request.match_info
    return request.app[DATAPLANE_KEY].model(info["name"], version=info.get("version"))


async def status(request: web.Request) -> web.Response:
    runtime = _model(request)
    return web.json_response(
        {
            "model_version_status": [
                {
                    "version": runtime.version,
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }
    )


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    dims = [{"size": "-1", "name": ""}] + [
        {"size": str(-1 if d is None else d), "name": ""} for d in spec.shape
    ]
    return {
        "dtype": _TF_DTYPES[spec.dtype],
        "tensor_shape": {"dim": dims, "unknown_rank": False},
        "name": spec.name,
    }


async def model_metadata(request: web.Request) -> web.Response:
    runtime = _model(request)
    signature = {
        "inputs": {runtime.input_spec.name: _tensor_info(runtime.input_spec)},
        "outputs": {runtime.output_spec.name: _tensor_info(runtime.output_spec)},
        "method_name": "tensorflow/serving/predict",
    }
    return web.json_response(
        {
            "model_spec": {"name": runtime.name, "signature_name": "", "version": runtime.version},
            "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
        }
    )


async def predict(request: web.Request) -> web.Response:
    plane = request.app[DATAPLANE_KEY]
    runtime = _model(request)
    document = await read_json(request)
    if not isinstance(document, dict) or ("instances" in document) == ("inputs" in document):
        raise InvalidRequest('send a JSON object with either "instances" (rows) or "inputs" (columns)')
    spec = runtime.input_spec
    if "instances" in document:
        values = document["instances"]
    else:
        values = document["inputs"]
        if isinstance(values, dict):
            values = _named(values, spec, where="inputs")
    if not isinstance(values, list) or not values:
        raise InvalidRequest("instances/inputs must be a non-empty list, one entry per input")
    items = [_item(value, spec, index=i) for i, value in enumerate(values)]
    result = await plane.infer(items)
    key = "predictions" if "instances" in document else "outputs"
    return json_text_response(json_text({}, **{key: floats_json(result.outputs)}))


def _named(value: dict[str, Any], spec: TensorSpec, *, where: str) -> Any:
    if set(value) != {spec.name}:
        raise InvalidRequest(f"{where} names {sorted(value)}; this model has one input, {spec.name!r}")
    return value[spec.name]


def _item(value: Any, spec: TensorSpec, *, index: int) -> Item:
    if isinstance(value, dict) and "b64" not in value:
        value = _named(value, spec, where=f"instance {index}")
    if spec.dtype == "string":
        if not isinstance(value, dict) or set(value) != {"b64"}:
            raise InvalidInput('an image is {"b64": "<base64 of the encoded image>"}', index=index)
        return decode_base64(value["b64"], index=index)
    if isinstance(value, dict):
        raise InvalidInput(f"{spec.name!r} takes nested lists of numbers, not {{'b64': ...}}", index=index)
    return to_float_input(value, spec=spec, index=index)
