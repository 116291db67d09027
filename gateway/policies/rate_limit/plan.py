"""Per-route plans of the `rate_limit` policy: each route's config compiled once, at start-up.

A `_Plan` holds what a route counts (its limits, with each tier's burst and rate), which peers to
believe for the client address and the failure mode; `_Plan.buckets` turns a call into the buckets
to take from. A route with one untiered, single-part limit (the usual case) also gets a `_One`,
which keys a call without making any objects and holds the admitted headers made in advance: a
full bucket's, and a memo of those for a whole number of tokens held. The header names and the
pre-formatted counts (`_TEXTS`) live here as well, since `_admitted_headers` builds them and the
policy writes the same ones for a decided verdict.

This is separate from the policy (`__init__.py`) because it is the compiled config, not the
request handling: nothing here awaits, counts or raises, and the plan is read-only once built (only
`_One.held_memo` fills in, a cache). The policy holds one plan per distinct config and runs the
request path against them. Names keep their leading underscore: they are private to this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, floor

from multidict import istr

from gateway.call import Call
from gateway.exchange import HeaderBlock
from gateway.policies.rate_limit.bucket import Bucket
from gateway.policies.rate_limit.config import RateLimitConfig
from gateway.policies.rate_limit.identity import (
    KeyPart,
    OneKey,
    TrustedProxies,
    forwarded_for,
    key_part,
    parse_key,
)


@dataclass(frozen=True, slots=True)
class _Limit:
    name: str
    parts: tuple[KeyPart, ...]
    burst: int
    rate: float
    tiers: dict[str, tuple[int, float]]


@dataclass(frozen=True, slots=True)
class _One:
    """A plan's only limit when it has no tiers and one key part: decided with no objects made."""

    name: str
    key: OneKey
    burst: int
    rate: float
    burst_text: str
    by_consumer: dict[str, str] | None  # key.by_value when the part is the consumer: found without a call
    # A full bucket (what a client below its rate finds) always leaves the same headers: burst - 1
    # remaining, full again in ceil(1 / rate) s. Made once; `held == full` picks them.
    full: float
    full_headers: dict[str, str]
    full_block: HeaderBlock  # the same three, rendered once: what a unary reply carries when they are all added
    # The admitted headers are a function of `held` alone (burst and rate are this One's), so those
    # of a whole number of tokens held are remembered with their block (`_held`): with Redis, the
    # requests of one consumer's batch share Redis's clock and hold full - 1, full - 2, ...
    held_memo: dict[float, tuple[dict[str, str], HeaderBlock]]

    def key_of(self, call: Call, plan: _Plan) -> str:
        """The bucket key of `call`: a consumer seen before has it remembered, anything else asks `key`."""
        by_consumer = self.by_consumer
        found = by_consumer.get(call.consumer) if by_consumer is not None else None  # type: ignore[arg-type]
        if found is not None:
            return found
        route = call.method_name if self.key.part.kind == "route" else None
        ip = call.client_ip if plan.trusted is None else plan.client_ip(call)
        return self.key(call.consumer, route, call.headers, ip)


@dataclass(frozen=True, slots=True)
class _Plan:
    """One route's config compiled once: what to count, by how much, which peers to believe."""

    enabled: bool
    limits: tuple[_Limit, ...]
    trusted: TrustedProxies | None
    fail_open: bool
    headers: bool
    one: _One | None

    @staticmethod
    def compile(cfg: RateLimitConfig) -> _Plan:
        limits = tuple(
            _Limit(
                name=lim.name,
                parts=parse_key(lim.key),
                burst=lim.burst,
                rate=lim.per_second,
                tiers={
                    tier: (t.burst or lim.burst, t.per_second or lim.per_second)
                    for tier, t in lim.tiers.items()
                },
            )
            for lim in cfg.limits
        )
        trusted = TrustedProxies(cfg.trusted_proxies) if cfg.trusted_proxies else None
        one = None
        if len(limits) == 1 and not limits[0].tiers and len(limits[0].parts) == 1:
            lim = limits[0]
            key = OneKey(lim.name, lim.parts[0])
            by_consumer = key.by_value if lim.parts[0].kind == "consumer" else None
            full_headers = _admitted_headers(str(lim.burst), lim.burst, lim.rate, float(lim.burst))
            one = _One(
                lim.name, key, lim.burst, lim.rate, str(lim.burst), by_consumer, float(lim.burst),
                full_headers, HeaderBlock.of(full_headers), {},
            )
        return _Plan(cfg.enabled, limits, trusted, cfg.fail_open, cfg.headers, one)

    def client_ip(self, call: Call) -> str:
        if self.trusted is None:
            return call.client_ip
        return self.trusted.client_address(call.client_ip, forwarded_for(call.headers))

    def buckets(self, call: Call) -> list[Bucket]:
        one = self.one
        if one is not None:
            key = one.key_of(call, self)
            return [Bucket(one.name, key, one.burst, one.rate)]
        tier = call.attributes.get("tier")
        tier = tier if isinstance(tier, str) else None
        ip = self.client_ip(call)
        out = []
        consumer, route, headers = call.consumer, call.method_name, call.headers
        for lim in self.limits:
            burst, rate = lim.tiers.get(tier, (lim.burst, lim.rate)) if tier and lim.tiers else (lim.burst, lim.rate)
            parts = lim.parts
            if len(parts) == 1:
                key = key_part(parts[0], consumer, route, headers, ip)
            else:
                key = "|".join([key_part(p, consumer, route, headers, ip) for p in parts])
            out.append(Bucket(lim.name, lim.name + ":" + key, burst, rate))
        return out


# Header values formatted once: most counts are small. A larger one is an f-string, never str(n)
# (a type call, ~800 instructions); the three headers are written out where they are set.
_TEXTS = tuple(str(n) for n in range(1024))
# istr: the response's CIMultiDict takes them without folding the name's case again.
LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER = (
    istr("RateLimit-Limit"), istr("RateLimit-Remaining"), istr("RateLimit-Reset")
)


def _admitted_headers(burst_text: str, burst: int, rate: float, held: float) -> dict[str, str]:
    """The three headers of a request admitted from a bucket that held `held` (>= 1) tokens."""
    left = held - 1.0  # as take_one stored it
    # floor (C, one argument) rather than int(), a type call; left >= 0, so floor is int()
    n = floor(left)
    # > 0: an admitted bucket holds at most burst - 1; the epsilon as in _ceil_s (__init__.py)
    n2 = ceil((burst - left) / rate - 1e-9)
    return {
        LIMIT_HEADER: burst_text,
        REMAINING_HEADER: _TEXTS[n] if n < 1024 else f"{n}",
        RESET_HEADER: _TEXTS[n2] if n2 < 1024 else f"{n2}",
    }
