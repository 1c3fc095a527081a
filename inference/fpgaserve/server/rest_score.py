"""``POST /score``: the Azure ML-style scoring route (raw image bodies or JSON).

Role: a thin face over the data plane. Requests:

- a raw image body, ``Content-Type: image/jpeg``, ``image/png`` (any ``image/*``) or
  ``application/octet-stream``: one input;
- ``application/json`` ``{"images": ["<base64>", ...]}`` for image models, or
  ``{"instances": [<nested list>, ...]}`` for models that take float32 tensors.

Answer: ``{"model", "version", "deviceSeconds", "results": [{"probabilities": [...], "top5": [...]}]}``
with ``top5`` only when the model has labels.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from fpgaserve.runtime.protocol import InvalidInput, TensorSpec
from fpgaserve.server.batch_requests import Item
from fpgaserve.server.codec import decode_base64, floats_json, to_float_input, top_labels
from fpgaserve.server.errors import InvalidRequest, UnsupportedMediaType
from fpgaserve.server.rest_common import (
    DATAPLANE_KEY,
    json_text,
    json_text_response,
    parse_json,
    read_body,
)

__all__ = ["routes", "score"]

RAW_TYPES = ("application/octet-stream",)  # and any image/*


def routes() -> list[web.RouteDef]:
    return [web.post("/score", score)]


async def score(request: web.Request) -> web.Response:
    plane = request.app[DATAPLANE_KEY]
    runtime = plane.model()
    content_type = request.content_type
    if content_type == "application/json":
        items = _json_items(parse_json(await read_body(request)), runtime.input_spec)
    elif content_type.startswith("image/") or content_type in RAW_TYPES:
        if runtime.input_spec.dtype != "string":
            raise InvalidRequest(
                f"model {runtime.name!r} takes float32 tensors, not images: "
                'send application/json {"instances": [...]}'
            )
        body = await read_body(request)
        if not body:
            raise InvalidInput("the body is empty; send the image's bytes", index=0)
        items = [body]
    else:
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not accepted: send an image (image/jpeg, image/png, "
            "application/octet-stream) or application/json"
        )
    result = await plane.infer(items)
    rows = []
    for row in result.outputs:
        raw = {"probabilities": floats_json(row)}
        top = top_labels(row, runtime.labels)
        if top is not None:
            raw["top5"] = json.dumps(top)
        rows.append(json_text({}, **raw))
    document = {"model": runtime.name, "version": runtime.version, "deviceSeconds": result.device_seconds}
    return json_text_response(json_text(document, results=f"[{','.join(rows)}]"))


def _json_items(document: Any, spec: TensorSpec) -> list[Item]:
    if not isinstance(document, dict):
        raise InvalidRequest('the body must be a JSON object: {"images": [...]} or {"instances": [...]}')
    if spec.dtype == "string":
        images = document.get("images")
        if not isinstance(images, list) or not images:
            raise InvalidRequest('this model takes images: send {"images": ["<base64>", ...]} (at least one)')
        return [decode_base64(value, index=i) for i, value in enumerate(images)]
    instances = document.get("instances")
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest(
            f"this model takes float32 tensors of shape {list(spec.shape)}: "
            'send {"instances": [<nested list>, ...]} (at least one)'
        )
    return [to_float_input(value, spec=spec, index=i) for i, value in enumerate(instances)]
