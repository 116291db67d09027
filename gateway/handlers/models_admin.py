"""Admin API of the screening model lifecycle: list, activate, roll back, shadow.

    GET  /admin/models            what is served (active, previous, shadow, disagreements) and on disk
    POST /admin/models/activate   {"version": "...", "name": optional}: load, verify, swap
    POST /admin/models/rollback   back to the previous version
    POST /admin/models/shadow     {"version": "..." | null}: score a candidate beside the active model

They act on the screening policy of the runtime serving now. A refused model (checksum, schema,
smoke test) answers 409 with the reason and changes nothing; `portcullis models ...` calls these.
With a fleet configured (`gateway/fleet.py`), a change that took effect here is then published to
the other gateways; the answer's `fleet` says whether it was (`published`, or the Redis `error`:
the local change stands either way), and `GET /admin/models` shows this gateway's fleet status.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web

from gateway.keys import STATE
from gateway.policies.screening import Screening
from screening.registry import LoadedModel, ModelRefused


def _policy(request: web.Request) -> Screening:
    for policy in request.app[STATE].current.runtime.pipeline.policies:
        if isinstance(policy, Screening):
            return policy
    raise web.HTTPNotFound(text='{"error": "the screening policy is not configured"}', content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        doc = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "the body is not JSON"}', content_type="application/json") from None
    if not isinstance(doc, dict):
        raise web.HTTPBadRequest(text='{"error": "expected a JSON object"}', content_type="application/json")
    return doc


async def _tell_fleet(request: web.Request, action: Literal["activate", "rollback", "shadow"], name: str,
                      model: LoadedModel | None) -> dict[str, Any]:
    fleet = request.app[STATE].fleet
    if fleet is None:
        return {}
    return {"fleet": await fleet.publish(action, name, model)}


async def list_models(request: web.Request) -> web.Response:
    fleet = request.app[STATE].fleet
    return web.json_response({**_policy(request).status(), **({"fleet": fleet.status()} if fleet else {})})


async def activate(request: web.Request) -> web.Response:
    policy = _policy(request)
    doc = await _body(request)
    version = doc.get("version")
    if not isinstance(version, str) or not version:
        return web.json_response({"error": "version is required"}, status=400)
    try:
        model = await policy.activate(version, doc.get("name"))
    except ModelRefused as exc:
        return web.json_response({"status": "refused", "error": exc.reason, **policy.status()}, status=409)
    told = await _tell_fleet(request, "activate", model.manifest.name, model)
    return web.json_response({"status": "activated", "model": model.key, **policy.status(), **told})


async def rollback(request: web.Request) -> web.Response:
    policy = _policy(request)
    try:
        model = await policy.rollback()
    except LookupError as exc:
        return web.json_response({"status": "refused", "error": str(exc)}, status=409)
    told = await _tell_fleet(request, "rollback", model.manifest.name, model)
    return web.json_response({"status": "rolled back", "model": model.key, **policy.status(), **told})


async def shadow(request: web.Request) -> web.Response:
    policy = _policy(request)
    doc = await _body(request)
    version = doc.get("version")
    if version is not None and not isinstance(version, str):
        return web.json_response({"error": "version must be a string or null"}, status=400)
    try:
        model = await policy.set_shadow(version, doc.get("name"))
    except ModelRefused as exc:
        return web.json_response({"status": "refused", "error": exc.reason, **policy.status()}, status=409)
    except LookupError as exc:
        return web.json_response({"status": "refused", "error": str(exc)}, status=409)
    told = await _tell_fleet(request, "shadow", doc.get("name") or policy.settings.model, model)
    return web.json_response({"status": "shadowing" if model else "shadow off", **policy.status(), **told})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/models", list_models)
    app.router.add_post("/admin/models/activate", activate)
    app.router.add_post("/admin/models/rollback", rollback)
    app.router.add_post("/admin/models/shadow", shadow)
