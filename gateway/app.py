"""`build_apps(runtime)`: the public app (one catch-all handler) and the admin app.

The two apps share one upstreams dict, filled by the public app's cleanup context and read by the
admin app's readiness endpoint. No per-route aiohttp routing: the compiled `RouteTable` matches,
so aiohttp's router holds one catch-all resource.
"""

from __future__ import annotations

from aiohttp import web

from gateway import edge, lifecycle
from gateway.handlers import admin
from gateway.keys import RUNTIME, UPSTREAMS
from gateway.runtime import Runtime
from gateway.upstream import GrpcUpstream


def build_apps(runtime: Runtime) -> tuple[web.Application, web.Application]:
    upstreams: dict[str, GrpcUpstream] = {}
    public = web.Application(client_max_size=runtime.config.server.max_body_bytes + 1)
    public[RUNTIME] = runtime
    public[UPSTREAMS] = upstreams
    public.cleanup_ctx.append(lifecycle.upstreams_ctx)
    public.cleanup_ctx.append(lifecycle.pipeline_ctx)
    public.router.add_get("/openapi.json", admin.openapi)
    public.router.add_route("*", "/{tail:.*}", edge.handle)

    admin_app = web.Application()
    admin_app[RUNTIME] = runtime
    admin_app[UPSTREAMS] = upstreams
    admin_app.router.add_get("/healthz", admin.healthz)
    admin_app.router.add_get("/readyz", admin.readyz)
    admin_app.router.add_get("/routes", admin.routes)
    admin_app.router.add_get("/openapi.json", admin.openapi)
    return public, admin_app
