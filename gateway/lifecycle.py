"""The gateway's long-lived state and its one owner: runtime, upstreams, policies, reloads.

`GatewayState.current` is a `Snapshot` (runtime plus the upstreams it routes to), read once per
request and swapped by reference. `open` (the public app's cleanup context, start-up before
`yield`) creates the upstream channels, starts their health checks and the policies; `close` stops
them in reverse order. `reload` re-reads the config file: a valid one builds a new runtime, reuses
every upstream whose backend config did not change, starts the new policies, swaps, and retires
the old policies and channels once in-flight requests had the grace period to finish; an invalid
one raises and the current snapshot keeps serving. Health loops and retirements run under one
`TaskGroup` that `close` cancels; nothing is created at module level. Model inference
(`gateway/inference.py`: the model repository and the gRPC inference listener), when configured,
opens after the policies and closes before them; a reload keeps it as it is. The fleet
(`gateway/fleet.py`: model changes shared over Redis), when configured, opens after the policies
(and converges them to the fleet's state), closes first, and converges each reloaded runtime again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import RedisError

from gateway.balancer import build_balanced
from gateway.config import BackendConfig, load_config
from gateway.fleet import Fleet, screening_policy
from gateway.inference import Inference
from gateway.runtime import Runtime, build_runtime
from gateway.upstream import Upstream, build_upstreams

log = logging.getLogger("portcullis.lifecycle")


def _build(backends: dict[str, BackendConfig]) -> dict[str, Upstream]:
    return dict(build_balanced(backends, lambda name, config: build_upstreams({name: config})[name]))


@dataclass(frozen=True, slots=True)
class Snapshot:
    runtime: Runtime
    upstreams: Mapping[str, Upstream]


class GatewayState:
    def __init__(self, runtime: Runtime, config_path: Path | None = None) -> None:
        self.config_path = config_path
        self.current = Snapshot(runtime, {})
        self.reloads = 0
        self._group: asyncio.TaskGroup | None = None
        self._health: dict[int, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # Model serving outlives reloads: its models and listener are built once, from the start-up config.
        inference = runtime.config.inference
        self.inference = Inference(inference) if inference is not None and inference.enabled else None
        fleet = runtime.config.fleet
        self.fleet = Fleet(fleet, lambda: screening_policy(self.current.runtime.pipeline.policies)) if fleet else None

    async def open(self) -> None:
        started = asyncio.Event()

        async def supervise() -> None:
            async with asyncio.TaskGroup() as group:
                self._group = group
                started.set()
                await self._stop.wait()
                for task in list(self._health.values()):
                    task.cancel()
                raise asyncio.CancelledError  # ends the group: retirements still pending are cancelled

        self._supervisor = asyncio.create_task(supervise())
        await started.wait()
        runtime = self.current.runtime
        upstreams = _build(dict(runtime.config.backends))
        self._watch(upstreams)
        await runtime.pipeline.start()
        self.current = Snapshot(runtime, upstreams)
        if self.fleet is not None:
            assert self._group is not None
            await self.fleet.open(self._group)
        if self.inference is not None:
            await self.inference.open(lambda: self.current.runtime.pipeline)

    def _watch(self, upstreams: Mapping[str, Upstream]) -> None:
        assert self._group is not None
        for upstream in upstreams.values():
            if id(upstream) not in self._health and upstream.config.health.enabled:
                self._health[id(upstream)] = self._group.create_task(upstream.check_health_forever())

    async def reload(self) -> Snapshot:
        """Swap in the config file as it is now; raises (and keeps serving) if it is invalid."""
        if self.config_path is None:
            raise ValueError("this gateway was not started from a config file")
        async with self._lock:
            config = load_config(self.config_path)
            runtime = await asyncio.to_thread(build_runtime, config)
            old = self.current
            keep: dict[str, Upstream] = {}
            fresh: dict[str, BackendConfig] = {}
            for name, backend in config.backends.items():
                existing = old.upstreams.get(name)
                if existing is not None and existing.config == backend:
                    keep[name] = existing
                else:
                    fresh[name] = backend
            created = _build(fresh)
            await runtime.pipeline.start()
            self._watch(created)
            self.current = Snapshot(runtime, {**keep, **created})
            self.reloads += 1
            if self.fleet is not None:
                try:  # the new screening policy loaded its configured version: back to the fleet's
                    await self.fleet.converge()
                except (RedisError, OSError, TimeoutError) as exc:
                    log.warning("reloaded without the fleet's model state: %s", exc)
            retired = [u for name, u in old.upstreams.items() if keep.get(name) is not u]
            grace = old.runtime.config.server.shutdown_grace_s
            assert self._group is not None
            self._group.create_task(self._retire(old, retired, grace))
            log.info("config reloaded from %s: %d routes", self.config_path, len(runtime.routes.bindings))
            return self.current

    async def _retire(self, old: Snapshot, upstreams: list[Upstream], grace: float) -> None:
        """Stop what the old snapshot held once requests that started under it had time to end."""
        try:
            await asyncio.sleep(grace)
        finally:
            await old.runtime.pipeline.stop()
            for upstream in upstreams:
                task = self._health.pop(id(upstream), None)
                if task is not None:
                    task.cancel()
                await upstream.close()

    async def close(self) -> None:
        if self.fleet is not None:
            await self.fleet.close()
        self._stop.set()
        if self._supervisor is not None:
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
        current = self.current
        if self.inference is not None:
            await self.inference.close(current.runtime.config.server.shutdown_grace_s)
        await current.runtime.pipeline.stop()
        await asyncio.gather(*(u.close() for u in current.upstreams.values()))


async def state_ctx(state: GatewayState) -> AsyncIterator[None]:
    await state.open()
    try:
        yield
    finally:
        await state.close()
