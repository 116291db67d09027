"""Typed application keys: what the aiohttp apps hold, by type, instead of string keys."""

from __future__ import annotations

from aiohttp import web

from gateway.runtime import Runtime
from gateway.upstream import GrpcUpstream

RUNTIME = web.AppKey("runtime", Runtime)
UPSTREAMS = web.AppKey("upstreams", dict[str, GrpcUpstream])
