"""Typed application keys: what the aiohttp apps hold, by type, instead of string keys."""

from __future__ import annotations

from aiohttp import web

from gateway.handlers.sockets import SocketHub
from gateway.lifecycle import GatewayState

STATE = web.AppKey("state", GatewayState)
SOCKETS = web.AppKey("sockets", SocketHub)  # this worker's open WebSockets
