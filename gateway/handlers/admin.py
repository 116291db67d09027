"""Admin endpoints on their own listener: liveness, readiness, the compiled route table, OpenAPI."""

from __future__ import annotations

from aiohttp import web

from gateway.keys import RUNTIME, UPSTREAMS


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when every backend has at least one address passing its health check, else 503."""
    report = {name: up.health_report() for name, up in request.app[UPSTREAMS].items()}
    ready = all(any(addresses.values()) for addresses in report.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "backends": report}, status=200 if ready else 503
    )


async def routes(request: web.Request) -> web.Response:
    return web.json_response(request.app[RUNTIME].routes.describe())


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[RUNTIME].openapi)
