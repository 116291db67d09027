"""Rate limiting (`rate_limit`): token buckets per consumer, client address, route or header.

Config is `RateLimitConfig` (`config.py`), validated at start-up; per-service and per-method overrides
replace whole fields (an override's `limits:` replaces the list). A route may carry several limits;
a request passes only if all of them have a token (`bucket.py`), and per-tier parameters are picked
by `call.attributes["tier"]`, which the API-key policy sets, so this policy sits after it.

Each route's config is compiled once into a plan (`plan.py`): its limits, trusted proxies and, for
the usual single limit, the admitted headers made in advance.

Backends behind one `take(buckets)` (`bucket.Backend`): `local` (in-process, the default, no
dependency; `local.py`) and `redis` (shared by a fleet, one atomic script per request; `redis.py`).
The remote backend is guarded by `timeout_ms` and a circuit breaker (`breaker.py`); when it cannot
answer, `fail_open` decides: admit without headers, or refuse with 503 UNAVAILABLE and a
`Retry-After` of the breaker's remaining cool-down. 503 rather than 429 because the client did
nothing wrong and must not read it as "slow down"; it says "the gateway cannot serve you now".

Every decided response carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
(draft-ietf-httpapi-ratelimit-headers; seconds until the bucket is full again) for the most
restrictive limit: the one that refused, else the one with the fewest tokens left. A refusal is
`GatewayError(RESOURCE_EXHAUSTED, "rate limit exceeded: <name>")` (429) with `Retry-After`, whole
seconds rounded up, and `QuotaFailure` and `RetryInfo` details; it counts in
`portcullis_ratelimit_rejections_total{route,limit}` and leaves `call.attributes["ratelimit"]` for
the access log, as a fallback to the failure mode does. A limit's name is its identity: the
same name anywhere shares one bucket per key, so two definitions of one name must be identical.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable
from math import ceil, floor

import grpc

from gateway.call import Call
from gateway.exchange import HeaderBlock
from gateway.metrics_registry import RATELIMIT_REJECTIONS
from gateway.policies.base import BasePolicy, RouteConfigs
from gateway.policies.rate_limit.breaker import CircuitBreaker
from gateway.policies.rate_limit.bucket import Backend, Bucket, LimiterUnavailable, Verdict, level
from gateway.policies.rate_limit.config import (
    GATEWAY_WIDE,
    MAX_BURST,
    MAX_RATE,
    MIN_RATE,
    BreakerConfig,
    LimitConfig,
    LocalConfig,
    RateLimitConfig,
    RedisConfig,
    TierLimit,
)
from gateway.policies.rate_limit.local import LocalBackend
from gateway.policies.rate_limit.plan import (
    _TEXTS,
    LIMIT_HEADER,
    REMAINING_HEADER,
    RESET_HEADER,
    _admitted_headers,
    _One,
    _Plan,
)
from translators.errors import GatewayError

log = logging.getLogger("portcullis.rate_limit")

# The config lives in config.py; its names stay importable from here.
__all__ = (
    "GATEWAY_WIDE",
    "MAX_BURST",
    "MAX_RATE",
    "MIN_RATE",
    "BreakerConfig",
    "LimitConfig",
    "LocalConfig",
    "RateLimit",
    "RateLimitConfig",
    "RedisConfig",
    "TierLimit",
    "build",
)

_HELD_MEMO_MAX = 256  # headers remembered per One (`_One.held_memo`)


def _ceil_s(seconds: float) -> int:
    return max(0, math.ceil(seconds - 1e-9))  # 2.0000000001 s of float noise is still 2


class RateLimit(BasePolicy):
    name = "rate_limit"

    def __init__(
        self, configs: RouteConfigs[RateLimitConfig], backend: Backend, breaker: CircuitBreaker | None = None
    ) -> None:
        self.configs = configs
        self.backend = backend
        self.breaker = breaker  # None for a backend that cannot fail (local)
        self._plans = {id(cfg): _Plan.compile(cfg) for cfg in configs.all()}
        self._default_plan = self._plans[id(configs.default)]
        self._one_config = not configs.by_route  # no per-route override: no lookup per request
        self.fallbacks = 0  # decisions made by the failure mode, not the backend
        self._last_failure: LimiterUnavailable | None = None
        # An in-process backend decides synchronously: call it directly, without two coroutine hops.
        self._take_now = getattr(backend, "take_now", None) if breaker is None else None
        self._take_one = getattr(backend, "take_one", None) if self._take_now is not None else None
        # A backend that answers later (Redis) with one bucket by its parts: a future of the tokens
        # held, as take_one returns them, so its usual case too makes no Bucket, Level or Verdict.
        self._take_later = getattr(backend, "take_one", None) if breaker is not None else None
        # The usual case, found with no lookup or test: one config, on, one limit, in process.
        default = self._default_plan
        usual = self._one_config and default.enabled and self._take_one is not None
        self._usual_one = default.one if usual else None

    async def start(self) -> None:
        await self.backend.start()

    async def stop(self) -> None:
        await self.backend.stop()

    def on_request(self, call: Call) -> Awaitable[None] | None:
        one = self._usual_one
        if one is None:
            plan = self._default_plan if self._one_config else self._plans[id(self.configs.for_call(call))]
            if not plan.enabled or not plan.limits:
                return None
            if self._take_later is not None and plan.one is not None:
                return self._ask_one(call, plan, plan.one)
            one = plan.one if self._take_one is not None else None
            if one is None:
                if self._take_now is None:
                    return self._ask(call, plan, plan.buckets(call))
                self._apply(call, plan, self._take_now(plan.buckets(call)))
                return None
        else:
            plan = self._default_plan
        # In process, one limit: decided now, no coroutine, no Bucket, Level or Verdict made.
        # _One.key_of, its usual case written out: a consumer seen before.
        by_consumer = one.by_consumer
        key = by_consumer.get(call.consumer) if by_consumer is not None else None  # type: ignore[arg-type]
        if key is None:
            key = one.key_of(call, plan)
        # The burst as a float (one.full): the backend compares it with floats only
        full, rate = one.full, one.rate
        held = self._take_one(key, full, rate)  # type: ignore[misc]
        if held == full:  # the usual case, a client below its rate: _held's last step, written out
            if plan.headers:
                if call.response_headers:
                    call.response_headers.update(one.full_headers)  # one C call, in the same order
                else:  # nothing set yet: a copy of the three (a clone of the table) is cheaper still,
                    call.response_headers = one.full_headers.copy()
                    call.response_block = one.full_block  # and they are that block, rendered once
            return None
        self._held(call, plan, one, held)
        return None

    def _held(self, call: Call, plan: _Plan, one: _One, held: float) -> None:
        """The one limit's bucket held `held` tokens before this request: headers for an admitted
        request, the 429 for a refused one (no Bucket or Level made when admitted). A full bucket's
        headers, and those of a whole number held, come made (with their block) from `_One`."""
        if held < 1.0:
            self._apply(call, plan, Verdict(False, (level(one.name, held, one.burst, one.rate),)))
            return
        if not plan.headers:
            return
        found = (one.full_headers, one.full_block) if held == one.full else one.held_memo.get(held)
        if found is None:
            fields = _admitted_headers(one.burst_text, one.burst, one.rate, held)
            # Remember only whole numbers held (what a batch sharing Redis's clock leaves): a refilled
            # bucket's fractions rarely repeat. Bounded all the same: a rate limit's burst is not.
            if held != floor(held):
                call.response_headers.update(fields)
                return
            memo = one.held_memo
            if len(memo) >= _HELD_MEMO_MAX:
                memo.clear()
            found = memo[held] = (fields, HeaderBlock.of(fields))
        if call.response_headers:  # one update, in the same order; else a copy and its block
            call.response_headers.update(found[0])
        else:
            call.response_headers = found[0].copy()
            call.response_block = found[1]

    async def _ask_one(self, call: Call, plan: _Plan, one: _One) -> None:
        """`_ask` for the usual case (one limit, no tiers, one key part): the backend answers the
        tokens the bucket held, and the headers are written from them as the local path does."""
        breaker = self.breaker
        assert breaker is not None and self._take_later is not None
        # quiet: closed with no failure counted, where allow() is True and success() changes nothing
        if not breaker.quiet and not breaker.allow():
            self._fallback(call, plan, "breaker open")
            return
        by_consumer = one.by_consumer  # _One.key_of's usual case written out, as on_request does
        key = by_consumer.get(call.consumer) if by_consumer is not None else None  # type: ignore[arg-type]
        if key is None:
            key = one.key_of(call, plan)
        try:
            held = await self._take_later(key, one.burst, one.rate)  # the int burst: it goes to Redis
        except LimiterUnavailable as exc:
            self._failed(call, plan, exc)
            return
        except BaseException:
            breaker.abandon()
            raise
        if not breaker.quiet:
            breaker.success()
        self._held(call, plan, one, held)

    async def _ask(self, call: Call, plan: _Plan, buckets: list[Bucket]) -> None:
        """A backend that answers later (Redis): its verdict, or the failure mode when it has none."""
        breaker = self.breaker
        if breaker is None:
            self._apply(call, plan, await self.backend.take(buckets))
            return
        if not breaker.allow():
            self._fallback(call, plan, "breaker open")
            return
        try:
            verdict = await self.backend.take(buckets)
        except LimiterUnavailable as exc:
            self._failed(call, plan, exc)
            return
        except BaseException:
            breaker.abandon()
            raise
        breaker.success()
        self._apply(call, plan, verdict)

    def _failed(self, call: Call, plan: _Plan, exc: LimiterUnavailable) -> None:
        """The backend could not answer: count it on the breaker, then the failure mode."""
        breaker = self.breaker
        assert breaker is not None
        opened = breaker.opened
        # The Redis backend answers every request of a failed batch with one error: one failed
        # round trip is one backend failure, however many requests it carried.
        if exc is not self._last_failure:
            self._last_failure = exc
            breaker.failure()
        if breaker.opened != opened:
            log.warning("rate limiter backend failing (%s): breaker open for %.1f s", exc, breaker.cooldown_s)
        self._fallback(call, plan, str(exc))

    def _apply(self, call: Call, plan: _Plan, verdict: Verdict | None) -> None:
        """Headers for a decided request; raise the 429 for a refused one."""
        if verdict is None:
            return
        levels = verdict.levels
        lv = levels[0] if len(levels) == 1 else verdict.binding()
        if plan.headers:
            # _ceil_s written out (a call and a max() per request with Redis): a level's burst,
            # remaining and reset are never negative (bucket.level), so neither is n
            headers = call.response_headers
            n = lv.burst
            headers[LIMIT_HEADER] = _TEXTS[n] if n < 1024 else f"{n}"
            n = lv.remaining
            headers[REMAINING_HEADER] = _TEXTS[n] if n < 1024 else f"{n}"
            n = ceil(lv.reset_s - 1e-9)
            headers[RESET_HEADER] = _TEXTS[n] if n < 1024 else f"{n}"
        if verdict.allowed:
            return
        retry = max(1, _ceil_s(lv.retry_after_s))
        call.attributes["ratelimit"] = {"rejected": lv.limit, "retry_after_s": retry}
        RATELIMIT_REJECTIONS.labels(route=call.route or "-", limit=lv.limit).inc()  # both from config
        raise GatewayError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"rate limit exceeded: {lv.limit}",
            details=[
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"subject": f"limit:{lv.limit}", "description": "rate limit exceeded"}],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry}s"},
            ],
            headers={"Retry-After": str(retry)},
        )

    def _fallback(self, call: Call, plan: _Plan, reason: str) -> None:
        """Apply the failure mode: return to admit, raise UNAVAILABLE to refuse."""
        self.fallbacks += 1
        call.attributes["ratelimit"] = {"fallback": "open" if plan.fail_open else "closed", "reason": reason}
        if plan.fail_open:
            return
        assert self.breaker is not None
        retry = max(1, _ceil_s(self.breaker.retry_after_s()))
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE, "rate limiter unavailable", headers={"Retry-After": str(retry)}
        )


def build(configs: RouteConfigs[RateLimitConfig]) -> RateLimit:
    from gateway.policies import PolicyConfigError

    default = configs.default
    for route, cfg in configs.by_route.items():
        for field in GATEWAY_WIDE:
            if getattr(cfg, field) != getattr(default, field):
                raise PolicyConfigError(
                    f"rate_limit override for {route}: {field!r} is gateway-wide (one backend per gateway); "
                    f"set it in the policies list entry instead"
                )
    seen: dict[str, LimitConfig] = {}
    for cfg in configs.all():
        for lim in cfg.limits:
            if seen.setdefault(lim.name, lim) != lim:
                raise PolicyConfigError(
                    f"rate_limit: limit {lim.name!r} is defined twice with different settings; a name is one "
                    f"set of buckets, so give the other definition its own name"
                )
    backend: Backend
    breaker = None
    if default.policy == "redis":
        from gateway.policies.rate_limit.redis import RedisBackend

        backend = RedisBackend(
            default.redis.url,
            default.redis.key_prefix,
            default.timeout_ms / 1000,
            default.redis.max_connections,
        )
        breaker = CircuitBreaker(default.breaker.failures, default.breaker.cooldown_s)
    else:
        backend = LocalBackend(default.local.max_keys)
    return RateLimit(configs, backend, breaker)
