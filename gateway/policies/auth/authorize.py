"""Authorization (`authorize`): may this principal call this route? Scopes and consumers, per route.

It runs after the authentication policies (`api_key`, `jwt`) and reads only what they left on the
`Call`, so scopes from an API key's consumer and from a token's `scope`/`scp` count alike. On an
enabled route a request without a principal is a 401; a principal outside `allowed_consumers`
(when that list is not empty) or lacking any of `required_scopes` is a 403. Settings are meant to
be given per service or per method; routes open to anyone set `enabled: false`.
"""

from __future__ import annotations

import re

import grpc
from pydantic import Field, field_validator

from gateway.call import Call
from gateway.policies.auth.keystore import TOKEN_PATTERN, is_scope_token
from gateway.policies.auth.principal import reject
from gateway.policies.base import BasePolicy, PolicyConfig, RouteConfigs


class AuthorizeConfig(PolicyConfig):
    enabled: bool = Field(True, description="Require an authenticated, authorized principal on these routes.")
    required_scopes: tuple[str, ...] = Field((), description="Scopes the caller must all hold.")
    allowed_consumers: tuple[str, ...] = Field((), description="Consumers allowed; empty allows any authenticated.")

    @field_validator("required_scopes")
    @classmethod
    def _scope_tokens(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for scope in value:
            if not is_scope_token(scope):
                raise ValueError(f"{scope!r} is not an OAuth scope token")
        return value

    @field_validator("allowed_consumers")
    @classmethod
    def _consumer_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for consumer in value:
            if not re.match(TOKEN_PATTERN, consumer):
                raise ValueError(f"{consumer!r} is not a consumer id (printable ASCII, no spaces)")
        return value


class AuthorizePolicy(BasePolicy):
    name = "authorize"

    def __init__(self, configs: RouteConfigs[AuthorizeConfig]) -> None:
        self.configs = configs

    async def on_request(self, call: Call) -> None:
        cfg = self.configs.for_call(call)
        if not cfg.enabled:
            return
        if call.consumer is None:
            raise reject(call, "no_principal", "authentication is required")
        if cfg.allowed_consumers and call.consumer not in cfg.allowed_consumers:
            raise reject(
                call, "consumer_not_allowed", "this consumer may not call this method",
                grpc.StatusCode.PERMISSION_DENIED,
            )
        missing = [s for s in cfg.required_scopes if s not in call.scopes]
        if missing:
            # RFC 6750 3.1: name the scopes needed, which are configuration, not secrets.
            needed = " ".join(cfg.required_scopes)
            raise reject(
                call, "insufficient_scope", f"missing scopes: {' '.join(missing)}", grpc.StatusCode.PERMISSION_DENIED,
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'},
            )


def build(configs: RouteConfigs[AuthorizeConfig]) -> AuthorizePolicy:
    return AuthorizePolicy(configs)
