"""The policy pipeline: an ordered, frozen tuple of policies and the runner of their phases.

Phases, in a fixed order (Pingora's shape): `on_request(call)` in configured order (raise
`GatewayError` to reject), `on_message(call, message)` for each inbound stream or WebSocket message,
and `on_complete(call)`, which always runs, in reverse order, and sees the error if there was one.
Policies are built once from config; the pipeline never changes after start-up (a reload builds a
new one).

A phase hook is either a coroutine function or a plain one that returns `None` when it decided
without waiting, or an awaitable when it has to wait (the Redis limiter). The pipeline awaits only
what is returned, so a policy that never waits costs one call per phase, not a coroutine made,
started and finished: with four policies that is eight coroutines less per request. The pipeline's
own `on_request` and `on_complete` follow the same convention (None, or an awaitable once a policy
has to wait), so a request whose policies all decide at once makes no coroutine for its phases;
callers write `pending = pipeline.on_request(call)` and await `pending` only when it is not None.
`on_message` stays a coroutine (the streaming handlers await it per message); `inspects_messages`
says when it can be skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.call import Call

log = logging.getLogger("portcullis.pipeline")


async def settle(pending: Awaitable[None] | None) -> None:
    """Await what a phase returned, if anything: for callers where one coroutine more costs nothing
    that matters (error paths, upgrades, streams, inference, tests); the plain REST path awaits
    the returned awaitable inline."""
    if pending is not None:
        await pending


class Reply(Exception):
    """Raised by a policy's `on_request` to answer the request itself (e.g. a CORS preflight)."""

    def __init__(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers or {}
        self.body = body


class Policy(Protocol):
    """Phase hooks return None (decided at once) or an awaitable the pipeline awaits."""

    name: str

    def on_request(self, call: Call) -> Awaitable[None] | None: ...

    def on_message(self, call: Call, message: Any) -> Awaitable[None] | None: ...

    def on_complete(self, call: Call) -> Awaitable[None] | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _overrides(policy: Policy, phase: str) -> bool:
    """Whether a policy does anything in `phase`: no-op defaults are skipped, not awaited per request."""
    from gateway.policies.base import BasePolicy

    mine = getattr(type(policy), phase, None)
    return mine is not None and mine is not getattr(BasePolicy, phase)


@dataclass(frozen=True, slots=True)
class Pipeline:
    policies: tuple[Policy, ...] = ()
    # Per phase, only the policies that act in it, in the order that phase runs them.
    _requesters: tuple[Policy, ...] = field(init=False, repr=False, default=())
    _messengers: tuple[Policy, ...] = field(init=False, repr=False, default=())
    _completers: tuple[Policy, ...] = field(init=False, repr=False, default=())
    # Whether any policy acts on each stream or WebSocket message (a relay may skip decoding if not);
    # a field, not a property: the REST path reads it per request.
    inspects_messages: bool = field(init=False, repr=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_requesters", tuple(p for p in self.policies if _overrides(p, "on_request")))
        object.__setattr__(self, "_messengers", tuple(p for p in self.policies if _overrides(p, "on_message")))
        completers = tuple(p for p in reversed(self.policies) if _overrides(p, "on_complete"))
        object.__setattr__(self, "_completers", completers)
        object.__setattr__(self, "inspects_messages", bool(self._messengers))

    def on_request(self, call: Call) -> Awaitable[None] | None:
        """Run `on_request` of each policy in order: None when all decided at once, else an awaitable
        that waits for the first one that has to wait and runs the rest after it."""
        for index, policy in enumerate(self._requesters):
            pending = policy.on_request(call)
            if pending is not None:
                return self._requests_after(call, pending, index + 1)
        return None

    async def _requests_after(self, call: Call, pending: Awaitable[None], start: int) -> None:
        await pending
        for policy in self._requesters[start:]:
            later = policy.on_request(call)
            if later is not None:
                await later

    async def on_message(self, call: Call, message: Any) -> None:
        for policy in self._messengers:
            pending = policy.on_message(call, message)
            if pending is not None:
                await pending

    async def start(self) -> None:
        """Open what policies hold (clients, files, background loops); called by the lifecycle."""
        for policy in self.policies:
            await policy.start()

    async def stop(self) -> None:
        for policy in reversed(self.policies):
            try:
                await policy.stop()
            except Exception:
                log.exception("policy %s failed to stop", policy.name)

    def on_complete(self, call: Call) -> Awaitable[None] | None:
        """Run `on_complete` of each policy in reverse order, as `on_request` does; one that raises is
        logged and the others still run (one broken observer must not hide the others or the response)."""
        for index, policy in enumerate(self._completers):
            try:
                pending = policy.on_complete(call)
            except Exception:
                log.exception("policy %s failed in on_complete", policy.name)
                continue
            if pending is not None:
                return self._completes_after(call, pending, index)
        return None

    async def _completes_after(self, call: Call, pending: Awaitable[None], index: int) -> None:
        completers = self._completers
        try:
            await pending
        except Exception:
            log.exception("policy %s failed in on_complete", completers[index].name)
        for policy in completers[index + 1:]:
            try:
                later = policy.on_complete(call)
                if later is not None:
                    await later
            except Exception:
                log.exception("policy %s failed in on_complete", policy.name)
