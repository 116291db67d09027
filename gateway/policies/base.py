"""What every policy shares: the no-op phase defaults and per-route configuration lookup.

A policy is configured globally and may be overridden per service or per method. Overrides are
merged over the global settings and validated at start-up, so per request a policy only looks its
settings up: method, then service, then global (`RouteConfigs.for_call`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from gateway.call import Call

T = TypeVar("T", bound=BaseModel)


class PolicyConfig(BaseModel):
    """Base of every policy's config: frozen, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class RouteConfigs(Generic[T]):
    default: T
    by_route: Mapping[str, T] = field(default_factory=dict)  # "pkg.Service" or "pkg.Service.Method"

    def for_call(self, call: Call) -> T:
        if not self.by_route:
            return self.default
        method = call.method_name
        if method is None:
            return self.default
        found = self.by_route.get(method)
        if found is None and call.service is not None:
            found = self.by_route.get(call.service)
        return found if found is not None else self.default

    def all(self) -> list[T]:
        return [self.default, *self.by_route.values()]


class BasePolicy:
    """No-op phases; a policy overrides only the ones it needs.

    A phase hook may be `async def`, or a plain `def` returning None when it never waits (cheaper:
    the pipeline makes no coroutine for it) or an awaitable when it sometimes does.
    """

    name = "base"

    def on_request(self, call: Call) -> Awaitable[None] | None:
        return None

    def on_message(self, call: Call, message: Any) -> Awaitable[None] | None:
        return None

    def on_complete(self, call: Call) -> Awaitable[None] | None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def merge(model: type[T], base: T, override: Mapping[str, Any]) -> T:
    """`base` with the keys of `override` replaced, validated as `model` (raises ValidationError)."""
    return model.model_validate({**base.model_dump(), **override})
