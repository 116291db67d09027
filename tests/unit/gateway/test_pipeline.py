"""The pipeline runner: plain and coroutine hooks, phase order, and failing observers (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from gateway.call import Call
from gateway.pipeline import Pipeline, settle
from gateway.policies.base import BasePolicy


class Recorder(BasePolicy):
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen


class Plain(Recorder):
    """Never waits: plain hooks returning None."""

    def on_request(self, call: Call) -> None:
        self.seen.append(f"{self.name}.request")

    def on_complete(self, call: Call) -> None:
        self.seen.append(f"{self.name}.complete")
        raise RuntimeError("observer broke")


class Sometimes(Recorder):
    """Plain hooks that return an awaitable when they have to wait (the Redis limiter's shape)."""

    def on_request(self, call: Call) -> Awaitable[None] | None:
        if call.path == "/wait":
            return self._later(call)
        self.seen.append(f"{self.name}.request now")
        return None

    async def _later(self, call: Call) -> None:
        await asyncio.sleep(0)
        self.seen.append(f"{self.name}.request later")
        raise ValueError("refused after waiting")


class Async(Recorder):
    async def on_request(self, call: Call) -> None:
        await asyncio.sleep(0)
        self.seen.append(f"{self.name}.request")

    async def on_complete(self, call: Call) -> None:
        self.seen.append(f"{self.name}.complete")


def call(path: str = "/") -> Call:
    return Call(request_id="r", method="GET", path=path, client_ip="127.0.0.1")


async def test_plain_and_coroutine_hooks_run_in_order_and_completes_in_reverse() -> None:
    seen: list[str] = []
    pipeline = Pipeline((Plain("a", seen), Sometimes("b", seen), Async("c", seen)))
    await settle(pipeline.on_request(call()))
    assert seen == ["a.request", "b.request now", "c.request"]
    seen.clear()
    await settle(pipeline.on_complete(call()))  # a's hook raises: logged, and every other observer still runs
    assert seen == ["c.complete", "a.complete"]


async def test_a_returned_awaitable_is_awaited_and_its_error_stops_the_phase() -> None:
    seen: list[str] = []
    pipeline = Pipeline((Plain("a", seen), Sometimes("b", seen), Async("c", seen)))
    with pytest.raises(ValueError, match="refused after waiting"):
        await settle(pipeline.on_request(call("/wait")))
    assert seen == ["a.request", "b.request later"]


def test_no_op_phases_are_skipped() -> None:
    seen: list[str] = []
    plain, timed = Plain("a", seen), Async("c", seen)
    pipeline = Pipeline((plain, timed))
    assert pipeline._messengers == ()
    assert pipeline._completers == (timed, plain)


class LateObserver(Recorder):
    """An `on_complete` that has to wait, then fails."""

    def on_complete(self, call: Call) -> Awaitable[None]:
        return self._later()

    async def _later(self) -> None:
        await asyncio.sleep(0)
        self.seen.append(f"{self.name}.complete later")
        raise RuntimeError("observer broke after waiting")


def test_phases_that_decide_at_once_return_none() -> None:
    """No policy, or only ones that never wait: no coroutine is made for the phase."""
    seen: list[str] = []
    assert Pipeline().on_request(call()) is None
    assert Pipeline().on_complete(call()) is None
    pipeline = Pipeline((Plain("a", seen), Sometimes("b", seen)))
    assert pipeline.on_request(call()) is None
    assert pipeline.on_complete(call()) is None  # a's hook raised: logged, still None
    assert seen == ["a.request", "b.request now", "a.complete"]


async def test_the_rest_of_a_phase_runs_after_the_first_awaitable() -> None:
    seen: list[str] = []
    pipeline = Pipeline((Async("c", seen), LateObserver("d", seen), Plain("a", seen), Sometimes("b", seen)))
    pending = pipeline.on_request(call())
    assert pending is not None and seen == []  # c is a coroutine function: the rest waits for it
    await pending
    assert seen == ["c.request", "a.request", "b.request now"]
    seen.clear()
    pending = pipeline.on_complete(call())
    assert pending is not None and seen == ["a.complete"]  # reverse order: a ran, then d had to wait
    await pending  # d's failure after waiting is logged, and c still completes
    assert seen == ["a.complete", "d.complete later", "c.complete"]


async def test_a_phase_with_one_acting_policy_passes_its_result_on() -> None:
    seen: list[str] = []
    pipeline = Pipeline((Sometimes("b", seen), LateObserver("d", seen)))  # b alone requests, d alone completes
    assert pipeline.on_request(call()) is None
    with pytest.raises(ValueError, match="refused after waiting"):
        await settle(pipeline.on_request(call("/wait")))
    assert seen == ["b.request now", "b.request later"]
    done = call()
    await settle(pipeline.on_complete(done))  # d's failure after waiting is logged, not raised
    assert seen[-1] == "d.complete later" and done.finished > 0.0
