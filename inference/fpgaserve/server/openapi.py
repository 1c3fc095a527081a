"""The OpenAPI 3 document of the server's HTTP API, served at ``GET /openapi.json``.

Role: one description of every route (and what the test suite fuzzes with schemathesis). Built per
request from the data plane, so that once the model is loaded its name, version and input name
appear as the only valid values.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fpgaserve.runtime.protocol import ModelRuntime
from fpgaserve.server.rest_common import DATAPLANE_KEY, package_version
from fpgaserve.server.rest_v2 import DATATYPES

__all__ = ["build_openapi", "openapi_handler", "routes"]

OPENAPI_PATH = "/openapi.json"

_ERROR = {"$ref": "#/components/schemas/Error"}
_NUMBERS = {"type": "array", "items": {}}  # nested lists of numbers, any depth
_OPEN: list[dict[str, list[str]]] = []  # the security of routes that need no key


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _responses(ok: dict[str, Any], *errors: int, ok_content: dict[str, Any] | None = None) -> dict[str, Any]:
    described = {
        400: "invalid request or input (which input, and why)",
        401: "missing or invalid key",
        404: "no such model or version",
        408: "the body did not arrive in time",
        413: "body or batch too large",
        415: "unsupported Content-Type",
        503: "model not ready, shutting down, or queue full (see Retry-After)",
        504: "inference did not finish in time",
    }
    responses: dict[str, Any] = {"200": {"description": "OK", "content": ok_content or _json(ok)}}
    for status in errors:
        responses[str(status)] = {"description": described[status], "content": _json(_ERROR)}
    return responses


def _operation(
    summary: str, responses: dict[str, Any], *, open_: bool = False, **extra: Any
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    if open_:
        operation["security"] = _OPEN
    return operation


def _param(name: str, values: list[str] | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if values:
        schema["enum"] = values
    return {"name": name, "in": "path", "required": True, "schema": schema}


def build_openapi(*, runtime: ModelRuntime | None, server_version: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document; ``runtime`` (None while loading) narrows names to the served ones."""
    name = _param("name", [runtime.name] if runtime else None)
    version = _param("version", [runtime.version] if runtime else None)
    input_names = {"enum": [runtime.input_spec.name]} if runtime else {}
    # Once the model is known, only its input's datatype is accepted (the server refuses others).
    datatypes = [DATATYPES[runtime.input_spec.dtype]] if runtime else sorted(DATATYPES.values())
    images = runtime is None or runtime.input_spec.dtype == "string"
    tensors = runtime is None or runtime.input_spec.dtype != "string"
    obj = {"type": "object"}
    infer_err = (400, 401, 404, 408, 413, 503, 504)
    meta_err = (401, 404, 503)
    score_body = {
        "required": True,
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/ScoreRequest"}},
        },
    }
    v2_body = {"required": True, "content": _json({"$ref": "#/components/schemas/InferenceRequest"})}
    tf_body = {"required": True, "content": _json({"$ref": "#/components/schemas/PredictRequest"})}
    v2_infer = _operation(
        "OIP v2 inference (JSON, or Triton's binary tensor extension)",
        _responses(
            {"$ref": "#/components/schemas/InferenceResponse"},
            *infer_err,
            ok_content={
                **_json({"$ref": "#/components/schemas/InferenceResponse"}),
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        ),
        requestBody=v2_body,
    )
    tf_predict = _operation("TF Serving predict", _responses(obj, *infer_err), requestBody=tf_body)
    paths: dict[str, Any] = {
        "/healthz": {"get": _operation("liveness probe", _responses(obj), open_=True)},
        "/readyz": {"get": _operation("readiness probe", _responses(obj, 503), open_=True)},
        "/metrics": {
            "get": _operation(
                "Prometheus metrics",
                _responses({}, ok_content={"text/plain": {"schema": {"type": "string"}}}),
                open_=True,
            )
        },
        OPENAPI_PATH: {"get": _operation("this document", _responses(obj), open_=True)},
        "/score": {
            "post": _operation(
                "score images: a raw image body, or JSON with base64 images or float tensors",
                _responses({"$ref": "#/components/schemas/ScoreResponse"}, *infer_err, 415),
                requestBody=score_body,
            )
        },
        "/v2": {"get": _operation("OIP v2 server metadata", _responses(obj, 401))},
        "/v2/health/live": {"get": _operation("OIP v2 liveness", _responses(obj), open_=True)},
        "/v2/health/ready": {"get": _operation("OIP v2 readiness", _responses(obj, 503), open_=True)},
        "/v2/models/{name}": {
            "get": _operation("OIP v2 model metadata", _responses(obj, *meta_err), parameters=[name])
        },
        "/v2/models/{name}/versions/{version}": {
            "get": _operation("OIP v2 model metadata", _responses(obj, *meta_err), parameters=[name, version])
        },
        "/v2/models/{name}/ready": {
            "get": _operation("OIP v2 model readiness", _responses(obj, *meta_err), parameters=[name])
        },
        "/v2/models/{name}/versions/{version}/ready": {
            "get": _operation(
                "OIP v2 model readiness", _responses(obj, *meta_err), parameters=[name, version]
            )
        },
        "/v2/models/{name}/infer": {"post": {**v2_infer, "parameters": [name]}},
        "/v2/models/{name}/versions/{version}/infer": {"post": {**v2_infer, "parameters": [name, version]}},
        "/v1/models/{name}": {
            "get": _operation("TF Serving model status", _responses(obj, *meta_err), parameters=[name])
        },
        "/v1/models/{name}/versions/{version}": {
            "get": _operation(
                "TF Serving model status", _responses(obj, *meta_err), parameters=[name, version]
            )
        },
        "/v1/models/{name}/metadata": {
            "get": _operation("TF Serving model metadata", _responses(obj, *meta_err), parameters=[name])
        },
        "/v1/models/{name}:predict": {"post": {**tf_predict, "parameters": [name]}},
        "/v1/models/{name}/versions/{version}:predict": {
            "post": {**tf_predict, "parameters": [name, version]}
        },
    }
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string", **input_names},
            "shape": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": datatypes},
            "parameters": {"type": "object"},
            "data": {"type": "array", "items": {}},
        },
    }
    schemas = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "ScoreRequest": {
            "type": "object",
            "description": "images (base64) for image models; instances (nested lists) for tensor models",
            "properties": {
                "images": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "byte"}},
                "instances": {"type": "array", "minItems": 1, "items": _NUMBERS},
            },
            # The served model takes one of the two (both, while no model is loaded yet).
            "anyOf": [{"required": ["images"]}] * images + [{"required": ["instances"]}] * tensors,
        },
        "ScoreResponse": {
            "type": "object",
            "required": ["model", "version", "deviceSeconds", "results"],
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "string"},
                "deviceSeconds": {"type": "number"},
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["probabilities"],
                        "properties": {
                            "probabilities": {"type": "array"},
                            "top5": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["label", "index", "probability"],
                                    "properties": {
                                        "label": {"type": "string"},
                                        "index": {"type": "integer"},
                                        "probability": {"type": "number"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "minItems": 1, "items": tensor},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}},
                    },
                },
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": {"type": "object"}},
            },
        },
        "PredictRequest": {
            "type": "object",
            "description": 'instances (rows) or inputs (columns); an image is {"b64": "<base64>"}',
            "properties": {
                "signature_name": {"type": "string"},
                "instances": {"type": "array", "minItems": 1, "items": {}},
                "inputs": {
                    "oneOf": [
                        {"type": "array", "minItems": 1, "items": {}},
                        {
                            "type": "object",
                            "minProperties": 1,
                            "maxProperties": 1,
                            "additionalProperties": {"type": "array", "minItems": 1, "items": {}},
                            **({"required": [runtime.input_spec.name]} if runtime else {}),
                        },
                    ]
                },
            },
            # Exactly one of the two: TF Serving's row and columnar formats do not mix.
            "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "fpgaserve inference server",
            "version": server_version,
            "description": "Models on emulated FPGAs: /score, the Open Inference Protocol v2, TF Serving REST.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }


async def openapi_handler(request: web.Request) -> web.Response:
    plane = request.app[DATAPLANE_KEY]
    runtime = plane.model() if plane.ready else None
    return web.json_response(build_openapi(runtime=runtime, server_version=package_version()))


def routes() -> list[web.RouteDef]:
    return [web.get(OPENAPI_PATH, openapi_handler)]
