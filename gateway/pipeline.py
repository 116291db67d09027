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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter
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


Phase = Callable[[Call], Awaitable[None] | None]


def _nothing(call: Call) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The phases of one configured, ordered policy list, built once.

    `on_request(call)` runs each policy's `on_request` in order and returns None when all decided at
    once, else an awaitable that waits for the first one that has to wait and runs the rest after
    it. `on_complete(call)` runs each `on_complete` in reverse order the same way; one that raises
    is logged and the others still run (one broken observer must not hide the others or the
    response). Both are plain functions compiled once for this list (`_compile`): per request a
    phase is one call per acting policy, with no loop, iterator or method lookup around it.
    """

    policies: tuple[Policy, ...] = ()
    # Per phase, only the policies that act in it, in the order that phase runs them.
    _requesters: tuple[Policy, ...] = field(init=False, repr=False, default=())
    _messengers: tuple[Policy, ...] = field(init=False, repr=False, default=())
    _completers: tuple[Policy, ...] = field(init=False, repr=False, default=())
    # Whether any policy acts on each stream or WebSocket message (a relay may skip decoding if not);
    # a field, not a property: the REST path reads it per request.
    inspects_messages: bool = field(init=False, repr=False, default=False)
    on_request: Phase = field(init=False, repr=False, default=_nothing)
    on_complete: Phase = field(init=False, repr=False, default=_nothing)

    def __post_init__(self) -> None:
        requesters = tuple(p for p in self.policies if _overrides(p, "on_request"))
        completers = tuple(p for p in reversed(self.policies) if _overrides(p, "on_complete"))
        object.__setattr__(self, "_requesters", requesters)
        object.__setattr__(self, "_messengers", tuple(p for p in self.policies if _overrides(p, "on_message")))
        object.__setattr__(self, "_completers", completers)
        object.__setattr__(self, "inspects_messages", bool(self._messengers))
        object.__setattr__(self, "on_request", _compile_requests(requesters, self._requests_after))
        object.__setattr__(self, "on_complete", _compile_completes(completers, self._completes_after))

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


# A phase is compiled into one function, written out per policy (the way dataclasses writes
# `__init__`): the hooks are bound methods resolved once, and each is followed by the test for an
# awaitable, which hands the rest of the phase to the pipeline's coroutine (`after`). on_complete
# first stamps `call.finished`, the one clock reading every observer's latency is taken from.
def _compile_requests(hooks: tuple[Policy, ...], after: Callable[..., Awaitable[None]]) -> Phase:
    if not hooks:
        return _nothing
    if len(hooks) == 1:  # its result is the phase's: None, or the awaitable that is all that is left
        return hooks[0].on_request
    lines = ["def on_request(call):"]
    for i in range(len(hooks)):
        lines += [f"    pending = h{i}(call)", "    if pending is not None:", f"        return after(call, pending, {i + 1})"]
    lines.append("    return None")
    return _define(lines, "on_request", {f"h{i}": hook.on_request for i, hook in enumerate(hooks)}, after)


def _compile_completes(hooks: tuple[Policy, ...], after: Callable[..., Awaitable[None]]) -> Phase:
    if not hooks:
        return _nothing
    lines = ["def on_complete(call):", "    call.finished = perf_counter()"]
    for i in range(len(hooks)):
        lines += [
            "    try:",
            f"        pending = h{i}(call)",
            "    except Exception:",
            f"        log.exception('policy %s failed in on_complete', n{i})",
            "    else:",
            "        if pending is not None:",
            f"            return after(call, pending, {i})",
        ]
    lines.append("    return None")
    names = {f"n{i}": hook.name for i, hook in enumerate(hooks)}
    return _define(lines, "on_complete", {f"h{i}": hook.on_complete for i, hook in enumerate(hooks)} | names, after)


def _define(lines: list[str], name: str, hooks: dict[str, Any], after: Callable[..., Awaitable[None]]) -> Phase:
    namespace: dict[str, Any] = {"log": log, "after": after, "perf_counter": perf_counter, **hooks}
    exec(compile("\n".join(lines), f"<pipeline {name}>", "exec"), namespace)  # noqa: S102 - our own source
    phase: Phase = namespace[name]
    return phase
