"""Admin endpoints on their own listener: liveness, readiness, routes, OpenAPI, reload."""

from __future__ import annotations

import os
import signal

from aiohttp import web

from gateway.config import ConfigError
from gateway.keys import STATE
from gateway.supervisor import SUPERVISED_ENV  # set for spawned workers: the parent forwards SIGHUP to all


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when every backend has at least one address passing its health check, else 503."""
    upstreams = request.app[STATE].current.upstreams
    report = {name: up.health_report() for name, up in upstreams.items()}
    ready = bool(report) and all(any(addresses.values()) for addresses in report.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "backends": report}, status=200 if ready else 503
    )


async def routes(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].current.runtime.routes.describe())


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].current.runtime.openapi)


async def reload(request: web.Request) -> web.Response:
    """Re-read the config file; 200 when swapped, 400 with the error when refused (old config kept)."""
    if os.environ.get(SUPERVISED_ENV):
        # Several workers: the supervisor forwards SIGHUP so that every worker reloads, not just this one.
        os.kill(os.getppid(), signal.SIGHUP)
        return web.json_response({"status": "reload requested for every worker"}, status=202)
    state = request.app[STATE]
    try:
        snapshot = await state.reload()
    except (ConfigError, ValueError, OSError) as exc:
        return web.json_response({"status": "refused", "error": str(exc)}, status=400)
    return web.json_response({"status": "reloaded", "routes": len(snapshot.runtime.routes.bindings)})
