"""REST: the Open Inference Protocol (KServe v2) under /v2, and Triton's repository extension.

    GET  /v2                                               server metadata
    GET  /v2/health/live | /v2/health/ready                server liveness and readiness
    GET  /v2/models/{name}[/versions/{v}]                  model metadata (signature from the ONNX graph)
    GET  /v2/models/{name}[/versions/{v}]/ready            model readiness
    GET  /v2/models/{name}[/versions/{v}]/config           Triton's model configuration document
    POST /v2/models/{name}[/versions/{v}]/infer            inference (JSON, or JSON + binary tensors)
    POST /v2/repository/index                              the repository's models and their states
    POST /v2/repository/models/{name}/load | /unload       load (hot swap) or unload a model

The edge hands every /v2 request here (with the `Call` it made) when inference is configured. The
path templates are compiled once, at import. A matched call gets its route, `inference.<model>`,
`inference/server` or `inference/repository` (service `inference`), and goes through the pipeline
like any route: `on_request` (authentication, per-model authorization, rate limits), then
`on_message` once with no message (the screening policy screens the head; tensors are never
screened), and the edge's `on_complete`. Every error, a policy's included, is rendered as the
protocol's `{"error": "..."}` with its status (400, 401, 403, 404, 429, 503...) and the headers the
error and the policies carry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import grpc
import orjson
from aiohttp import web

from gateway.call import Call
from gateway.handlers.rest import read_body
from gateway.inference import EXTENSIONS, SERVER_NAME, Inference, gateway_error
from gateway.inference_config import REPOSITORY_ROUTE, SERVER_ROUTE, SERVICE
from gateway.keys import STATE
from gateway.lifecycle import Snapshot
from gateway.pipeline import settle
from screening.serving import codec
from screening.serving.errors import InvalidInput, ModelNotReady, ServingError
from translators.errors import GatewayError, MethodNotAllowed, NotFound
from translators.status import http_status

log = logging.getLogger("portcullis.inference")
JSON = "application/json"
HEADER_LENGTH = "Inference-Header-Content-Length"

_MODEL = r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
_REPO_MODEL = r"/v2/repository/models/(?P<name>[^/]+)"
# (template, HTTP method, endpoint); the endpoint names the function below.
_ROUTES: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern), method, endpoint) for pattern, method, endpoint in (
        (r"/v2/?", "GET", "server_metadata"),
        (r"/v2/health/live", "GET", "live"),
        (r"/v2/health/ready", "GET", "ready"),
        (_MODEL + "/?", "GET", "model_metadata"),
        (_MODEL + "/ready", "GET", "model_ready"),
        (_MODEL + "/config", "GET", "model_config"),
        (_MODEL + "/infer", "POST", "infer"),
        (r"/v2/repository/index", "POST", "index"),
        (_REPO_MODEL + "/load", "POST", "load"),
        (_REPO_MODEL + "/unload", "POST", "unload"),
    )
)


def serves(request: web.Request) -> bool:
    """Whether this request is the inference service's: /v2 paths, when inference is configured."""
    path = request.path
    return (path == "/v2" or path.startswith("/v2/")) and request.app[STATE].inference is not None


def _match(method: str, raw_path: str) -> tuple[str, dict[str, str]]:
    allowed = []
    for pattern, wanted, endpoint in _ROUTES:
        found = pattern.fullmatch(raw_path)
        if found is None:
            continue
        if method in (wanted, "HEAD" if wanted == "GET" else wanted):
            return endpoint, {k: unquote(v) for k, v in found.groupdict().items() if v is not None}
        allowed.append(wanted)
    if allowed:
        raise MethodNotAllowed(method, allowed)
    raise NotFound(f"no inference endpoint at {raw_path}")


def error_response(err: GatewayError) -> web.Response:
    """The protocol's error body, `{"error": "..."}`, with the error's status and headers."""
    status = err.http_status or http_status(err.code)
    headers = {"Content-Type": JSON, **err.headers}
    if err.code is grpc.StatusCode.UNAUTHENTICATED and "WWW-Authenticate" not in headers:
        headers["WWW-Authenticate"] = "Bearer"
    return web.Response(status=status, headers=headers, body=codec.error_body(err.message))


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), headers={"Content-Type": JSON})


async def handle(request: web.Request, call: Call, snapshot: Snapshot) -> web.StreamResponse:
    inference = request.app[STATE].inference
    assert inference is not None  # `serves` said so
    try:
        endpoint, params = _match(request.method, request.raw_path.split("?", 1)[0])
        name = params.get("name")
        if endpoint in ("index", "load", "unload"):
            call.route = REPOSITORY_ROUTE
        elif name is not None:
            call.route = inference.route_for(name)
        else:
            call.route = SERVER_ROUTE
        call.service = SERVICE
        await settle(snapshot.runtime.pipeline.on_request(call))
        await snapshot.runtime.pipeline.on_message(call, None)  # the head, once; tensors are not screened
        try:
            return await _ENDPOINTS[endpoint](request, call, snapshot, inference, params)
        except ServingError as exc:
            raise gateway_error(exc) from None
    except GatewayError as err:
        call.error, call.grpc_code = err, err.code.name
        return error_response(err)
    except Exception:
        log.exception("inference request %s %s failed (request %s)", request.method, request.path, call.request_id)
        internal = GatewayError(grpc.StatusCode.INTERNAL, "internal error")
        call.error, call.grpc_code = internal, internal.code.name
        return error_response(internal)


Endpoint = Callable[[web.Request, Call, Snapshot, Inference, dict[str, str]], Awaitable[web.StreamResponse]]


async def _server_metadata(_r: web.Request, _c: Call, _s: Snapshot, inf: Inference, _p: dict[str, str]) -> web.Response:
    return _json(codec.server_metadata(SERVER_NAME, inf.version, EXTENSIONS))


async def _live(_r: web.Request, _c: Call, _s: Snapshot, _i: Inference, _p: dict[str, str]) -> web.Response:
    return _json({"live": True})


async def _ready(_r: web.Request, _c: Call, _s: Snapshot, inf: Inference, _p: dict[str, str]) -> web.Response:
    if not inf.repository.ready():
        raise ModelNotReady("not every model is ready")
    return _json({"ready": True})


async def _model_metadata(_r: web.Request, _c: Call, _s: Snapshot, inf: Inference, p: dict[str, str]) -> web.Response:
    served = inf.repository.resolve(p["name"], p.get("version"))
    return _json(codec.model_metadata(served.model, inf.repository.ready_versions(p["name"])))


async def _model_ready(_r: web.Request, _c: Call, _s: Snapshot, inf: Inference, p: dict[str, str]) -> web.Response:
    served = inf.repository.resolve(p["name"], p.get("version"))
    return _json({"name": served.model.name, "version": served.model.version, "ready": True})


async def _model_config(_r: web.Request, _c: Call, _s: Snapshot, inf: Inference, p: dict[str, str]) -> web.Response:
    return _json(codec.model_config(inf.repository.resolve(p["name"], p.get("version")).model))


async def _infer(request: web.Request, call: Call, snapshot: Snapshot, inf: Inference,
                 p: dict[str, str]) -> web.StreamResponse:
    body = await read_body(request, inf.config.max_request_bytes, snapshot.runtime.config.server.body_timeout_s)
    call.bytes_in = len(body)
    call.upstream = "inference"
    given = request.headers.get(HEADER_LENGTH)
    header_length = None
    if given is not None:
        if not given.strip().isdigit():
            raise InvalidInput(f"{HEADER_LENGTH} must be a byte count, got {given!r}")
        header_length = int(given)
    model, infer_request, result = await inf.infer(
        call, p["name"], p.get("version"), lambda: codec.decode_request(body, header_length)
    )
    out, json_length = codec.encode_response(model, infer_request, result.outputs)
    call.bytes_out = len(out)
    if json_length is None:
        response = web.Response(body=out, headers={"Content-Type": JSON})
    else:
        response = web.Response(
            body=out, headers={"Content-Type": "application/octet-stream", HEADER_LENGTH: str(json_length)}
        )
    if any(enc in request.headers.get("Accept-Encoding", "") for enc in ("gzip", "deflate")):
        response.enable_compression()
    return response


async def _options(request: web.Request, limit: int) -> dict[str, Any]:
    """A repository call's optional JSON body; its `parameters` beyond the supported ones are refused."""
    body = await read_body(request, limit, 10.0)
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput("the request body is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the request body must be a JSON object")
    return doc


async def _index(request: web.Request, _c: Call, _s: Snapshot, inf: Inference, _p: dict[str, str]) -> web.Response:
    doc = await _options(request, 64 * 1024)
    ready_only = bool(doc.get("ready", False))
    return _json(codec.index_document(inf.repository.index(ready_only)))


async def _load(request: web.Request, _c: Call, _s: Snapshot, inf: Inference, p: dict[str, str]) -> web.Response:
    doc = await _options(request, 64 * 1024)
    parameters = doc.get("parameters") or {}
    if parameters:
        raise InvalidInput(f"load parameters are not supported: {', '.join(sorted(parameters))}")
    await inf.repository.load(p["name"])
    return web.Response(status=200)


async def _unload(request: web.Request, _c: Call, _s: Snapshot, inf: Inference, p: dict[str, str]) -> web.Response:
    await _options(request, 64 * 1024)  # Triton's `unload_dependents`: there are no dependents here
    await inf.repository.unload(p["name"])
    return web.Response(status=200)


_ENDPOINTS: dict[str, Endpoint] = {
    "server_metadata": _server_metadata, "live": _live, "ready": _ready, "model_metadata": _model_metadata,
    "model_ready": _model_ready, "model_config": _model_config, "infer": _infer, "index": _index,
    "load": _load, "unload": _unload,
}
