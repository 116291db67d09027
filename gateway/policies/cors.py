"""CORS per route: preflights answered by the gateway, actual responses given the allow headers.

Origins are matched exactly (or `*` when configured, never together with credentials, which the
config refuses). A preflight for an allowed origin, method and headers is a 204 with the
`Access-Control-Allow-*` headers and `Max-Age`; a disallowed one is a 403, so the browser blocks the
call without the backend ever seeing it. Routes without CORS configured answer preflights with 405.
"""

from __future__ import annotations

import grpc
from pydantic import Field, model_validator

from gateway.call import Call
from gateway.pipeline import Reply
from gateway.policies.base import BasePolicy, PolicyConfig, RouteConfigs
from translators.errors import GatewayError


class CorsConfig(PolicyConfig):
    enabled: bool = Field(True, description="Apply CORS on these routes.")
    allow_origins: tuple[str, ...] = Field((), description="Exact origins allowed, or '*' for any.")
    allow_methods: tuple[str, ...] = Field(
        ("GET", "POST", "PUT", "PATCH", "DELETE"), description="Methods a preflight may ask for."
    )
    allow_headers: tuple[str, ...] = Field(
        ("content-type", "authorization", "x-api-key", "x-request-id"),
        description="Request headers a preflight may ask for (case-insensitive).",
    )
    expose_headers: tuple[str, ...] = Field(("x-request-id",), description="Response headers scripts may read.")
    allow_credentials: bool = Field(False, description="Send Access-Control-Allow-Credentials: true.")
    max_age_s: int = Field(600, ge=0, le=86400, description="How long browsers may cache a preflight.")

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> CorsConfig:
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("allow_origins '*' cannot be combined with allow_credentials (browsers refuse it)")
        return self


class Cors(BasePolicy):
    name = "cors"

    def __init__(self, configs: RouteConfigs[CorsConfig]) -> None:
        self.configs = configs

    async def on_request(self, call: Call) -> None:
        origin = call.headers.get("Origin")
        if origin is None:
            return
        cfg = self.configs.for_call(call)
        if not cfg.enabled:
            return
        allowed = "*" in cfg.allow_origins or origin in cfg.allow_origins
        preflight = call.method == "OPTIONS" and "Access-Control-Request-Method" in call.headers
        if not allowed:
            if preflight:
                raise GatewayError(grpc.StatusCode.PERMISSION_DENIED, f"origin {origin} is not allowed")
            return  # no allow headers: the browser withholds the response from the page
        common = {"Access-Control-Allow-Origin": "*" if "*" in cfg.allow_origins else origin, "Vary": "Origin"}
        if cfg.allow_credentials:
            common["Access-Control-Allow-Credentials"] = "true"
        if not preflight:
            call.response_headers.update(common)
            if cfg.expose_headers:
                call.response_headers["Access-Control-Expose-Headers"] = ", ".join(cfg.expose_headers)
            return
        method = call.headers["Access-Control-Request-Method"].upper()
        asked = [h.strip().lower() for h in call.headers.get("Access-Control-Request-Headers", "").split(",") if h.strip()]
        allowed_headers = {h.lower() for h in cfg.allow_headers}
        if method not in cfg.allow_methods or any(h not in allowed_headers for h in asked):
            raise GatewayError(grpc.StatusCode.PERMISSION_DENIED, "CORS preflight asks for a method or header not allowed")
        raise Reply(
            204,
            {
                **common,
                "Access-Control-Allow-Methods": ", ".join(cfg.allow_methods),
                "Access-Control-Allow-Headers": ", ".join(cfg.allow_headers),
                "Access-Control-Max-Age": str(cfg.max_age_s),
            },
        )


def build(configs: RouteConfigs[CorsConfig]) -> Cors:
    return Cors(configs)
