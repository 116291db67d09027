"""The `rate_limit` policy's config: what each field means, its type, default and bounds.

Validated once at start-up (frozen pydantic models, unknown keys refused); the policy compiles it
into plans (`gateway.policies.rate_limit`) and never reads it per request. A limit's `key` is
checked by `identity.parse_key`, so a bad key fails here with its key path.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, IPvAnyNetwork, field_validator, model_validator

from gateway.policies.base import PolicyConfig
from gateway.policies.rate_limit.identity import parse_key

MAX_BURST = 1_000_000
MIN_RATE, MAX_RATE = 0.001, 1_000_000.0  # bounded so time-to-full stays a sane Redis PEXPIRE


class TierLimit(PolicyConfig):
    burst: int | None = Field(
        None, ge=1, le=MAX_BURST, description="Bucket size for this tier (default: the limit's)."
    )
    per_second: float | None = Field(
        None, ge=MIN_RATE, le=MAX_RATE, description="Refill rate for this tier (default: the limit's)."
    )


class LimitConfig(PolicyConfig):
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Identity of the limit: reported in 429s and metrics, and part of every bucket key.",
    )
    key: str = Field(
        "ip",
        description="What is counted: consumer, ip, route, global or header:<Name>, or several joined by '+' "
        "(e.g. consumer+route). A missing consumer or header falls back to the client address.",
    )
    burst: int = Field(
        ge=1, le=MAX_BURST, description="Bucket size: requests admitted at once after a quiet period."
    )
    per_second: float = Field(ge=MIN_RATE, le=MAX_RATE, description="Tokens added back per second.")
    tiers: dict[str, TierLimit] = Field(
        default_factory=dict,
        description="Per-tier overrides, chosen by call.attributes['tier'] (set by api_key).",
    )

    @field_validator("key")
    @classmethod
    def _key_parses(cls, value: str) -> str:
        parse_key(value)
        return value


class RedisConfig(PolicyConfig):
    url: str = Field(
        "redis://127.0.0.1:6379/0", description="redis://, rediss:// or unix:// URL of the shared Redis."
    )
    key_prefix: str = Field(
        "portcullis:rl:", max_length=128, description="Prefix of every bucket key in Redis."
    )
    max_connections: int = Field(
        8,
        ge=1,
        le=1024,
        description="Connections per gateway process; requests queue for one within timeout_ms. Few is "
        "right: a script takes ~0.1 ms, and opening many at once on a cold pool can outlast the timeout.",
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not re.match(r"^(redis|rediss|unix)://", value):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value


class BreakerConfig(PolicyConfig):
    failures: int = Field(3, ge=1, le=1000, description="Consecutive backend failures that open the breaker.")
    cooldown_s: float = Field(5.0, gt=0, le=3600, description="How long an open breaker skips the backend.")


class LocalConfig(PolicyConfig):
    max_keys: int = Field(
        100_000,
        ge=1,
        le=10_000_000,
        description="Most buckets held in process; least recently used go first.",
    )


class RateLimitConfig(PolicyConfig):
    enabled: bool = Field(True, description="Apply rate limits on these routes.")
    policy: Literal["local", "redis"] = Field(
        "local",
        description="Backend: 'local' counts per process, so with `serve --workers N` each worker keeps its own "
        "buckets and a key may be admitted up to N times the limit (the limit is not divided: connections "
        "are not spread evenly, so a share would refuse early); 'redis' shares buckets across workers and "
        "the fleet.",
    )
    limits: tuple[LimitConfig, ...] = Field(
        (), description="Limits that all apply; a request needs a token from each."
    )
    trusted_proxies: tuple[IPvAnyNetwork, ...] = Field(
        (), description="CIDRs of proxies whose X-Forwarded-For is believed when they are the direct peer."
    )
    fail_open: bool = Field(
        True,
        description="When the backend cannot answer: admit (true) or refuse with 503 UNAVAILABLE (false).",
    )
    timeout_ms: int = Field(
        50, ge=1, le=10_000, description="Longest wait for the redis backend per request."
    )
    breaker: BreakerConfig = Field(
        default_factory=BreakerConfig, description="Circuit breaker of the redis backend."
    )
    redis: RedisConfig = Field(default_factory=RedisConfig, description="The shared Redis (policy: redis).")
    local: LocalConfig = Field(
        default_factory=LocalConfig, description="The in-process store (policy: local)."
    )
    headers: bool = Field(True, description="Send RateLimit-Limit/-Remaining/-Reset on decided responses.")

    @model_validator(mode="after")
    def _unique_names(self) -> RateLimitConfig:
        names = [limit.name for limit in self.limits]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"limit names must be unique (they name the buckets): {', '.join(twice)}")
        return self


# Settings of the one backend a gateway holds: an override may not change them.
GATEWAY_WIDE = ("policy", "timeout_ms", "breaker", "redis", "local")
