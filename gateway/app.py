"""`build_apps(state)`: the public app (one catch-all handler) and the admin app.

Both apps hold the same `GatewayState`; the public app's cleanup context opens and closes it.
No per-route aiohttp routing: the compiled `RouteTable` matches, so aiohttp's router holds one
catch-all resource. `public_handler` then skips even that router for most requests: the server
calls the edge directly (measured: 6-7 % fewer instructions per request, docs/benchmarks.md).
Most requests do not reach aiohttp at all: the lean HTTP/1.1 server (`gateway/http1.py`) serves
plain unary REST requests in front of it and hands it the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from gateway import edge, lifecycle, metrics_registry
from gateway.handlers import admin, models_admin
from gateway.handlers.sockets import SocketHub
from gateway.keys import SOCKETS, STATE
from gateway.lifecycle import GatewayState

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


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


def own_paths(public: web.Application) -> frozenset[str]:
    """The public app's own routes (`/openapi.json`): aiohttp's router serves them, not the edge."""
    return frozenset(
        r.resource.canonical for r in public.router.routes() if r.resource is not None and r.handler is not edge.handle
    )


def public_handler(public: web.Application, routed: Handler) -> Handler:
    """The public server's request handler: the edge, without aiohttp's per-request routing.

    `routed` is aiohttp's own (`Application._handle`: router, Expect handling, middlewares). With one
    catch-all resource and no middlewares, all it does for most requests is resolve that resource and
    build its match info, so the edge is called directly with one shared, frozen match info (which
    `request.app` reads). A request aiohttp must see itself still goes through `routed`: one with an
    `Expect` header (100-continue), and the public app's own routes (`/openapi.json`).
    """
    if public.middlewares:  # middlewares must run: keep aiohttp's path for everything
        return routed
    route = next(r for r in public.router.routes() if r.handler is edge.handle)
    shared = UrlMappingMatchInfo({}, route)
    shared.add_app(public)
    shared.freeze()
    own = own_paths(public)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.path in own or hdrs.EXPECT in request.headers:
            return await routed(request)
        request._match_info = shared  # type: ignore[attr-defined]  # what Application._handle sets
        return await edge.handle(request)  # type: ignore[arg-type]  # the request factory makes web.Request

    return handle
