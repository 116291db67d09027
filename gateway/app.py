"""`build_apps(state)`: the public app (one catch-all handler) and the admin app.

Both apps hold the same `GatewayState`; the public app's cleanup context opens and closes it.
No per-route aiohttp routing: the compiled `RouteTable` matches, so aiohttp's router holds one
catch-all resource.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway import edge, lifecycle, metrics_registry
from gateway.handlers import admin, models_admin
from gateway.handlers.sockets import SocketHub
from gateway.keys import SOCKETS, STATE
from gateway.lifecycle import GatewayState


def build_apps(state: GatewayState) -> tuple[web.Application, web.Application]:
    config = state.current.runtime.config
    public = web.Application(client_max_size=config.server.max_body_bytes + 1)
    public[STATE] = state

    async def state_ctx(_app: web.Application) -> AsyncIterator[None]:
        async for _ in lifecycle.state_ctx(state):
            yield

    public.cleanup_ctx.append(state_ctx)
    public[SOCKETS] = SocketHub()  # the public listener ends open WebSockets (1001) before it drains
    public.router.add_get("/openapi.json", admin.openapi)
    public.router.add_route("*", "/{tail:.*}", edge.handle)

    admin_app = web.Application()
    admin_app[STATE] = state
    admin_app.router.add_get("/healthz", admin.healthz)
    admin_app.router.add_get("/readyz", admin.readyz)
    admin_app.router.add_get("/routes", admin.routes)
    admin_app.router.add_get("/openapi.json", admin.openapi)
    admin_app.router.add_get("/metrics", metrics_registry.metrics_handler(lambda: state.current.upstreams))
    admin_app.router.add_post("/admin/reload", admin.reload)
    models_admin.add_routes(admin_app)
    return public, admin_app
