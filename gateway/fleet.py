"""The fleet: a screening model activated, rolled back or shadowed on one gateway follows on every other.

Optional (`fleet:` in the config). The gateway whose admin API took a change applies it locally
first, then publishes `{action, name, version, sha256, origin}` on a Redis pub/sub channel and
records the fleet's state (the active model and the shadow) in the hash `<channel>:state`, both in
one MULTI. Every gateway subscribed applies a message through the same path as the admin API
(`Screening.activate`, `rollback`, `set_shadow`: load in a thread, verify the file's sha256 against
its manifest, the feature schema and the golden smoke test, then swap by reference), after checking
that its own manifest of that version carries the published sha256. A gateway refuses a model it
does not have, or whose checksum differs, logs why, counts it (`portcullis_fleet_messages_total`,
outcome `refused`) and keeps serving its current model. The origin ignores its own messages.

Pub/sub delivers only to those listening, so a gateway reads the state hash each time it
subscribes, at start-up and after a lost connection, and converges to it (after subscribing, so a
change published in between is not missed). A subscription quiet for `keepalive_s` pings Redis; no
PONG within `timeout_s` (a hung Redis, a path that broke silently) counts as a lost connection. A config reload converges the new policy again. Redis
down never stops a local change: the publish failure is reported to the caller (the admin response)
and counted. One owner: `GatewayState` opens the fleet after the policies started and closes it
first; its listener runs in the state's `TaskGroup`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.config import FleetConfig
from gateway.metrics_registry import FLEET_MESSAGES
from gateway.policies.screening import Screening
from screening.registry import LoadedModel, ModelRefused

log = logging.getLogger("portcullis.fleet")
ACTIONS = ("activate", "rollback", "shadow")
CLIENT_NAME = "portcullis-fleet"


@dataclass(frozen=True, slots=True)
class Change:
    """One model change as published: `version` None is "shadow off"."""

    action: str
    name: str
    version: str | None
    sha256: str | None
    origin: str

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"

    def to_bytes(self) -> bytes:
        return orjson.dumps({"action": self.action, "name": self.name, "version": self.version,
                             "sha256": self.sha256, "origin": self.origin})

    @classmethod
    def parse(cls, raw: bytes | str) -> Change:
        """A change from its JSON; `ValueError` names what is wrong."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ValueError("not JSON") from None
        fields = doc if isinstance(doc, dict) else {}
        action, name, version, digest, origin = (fields.get(k) for k in ("action", "name", "version", "sha256",
                                                                          "origin"))
        if action not in ACTIONS:
            raise ValueError(f"not a change: action {action!r}")
        if not isinstance(name, str) or not name or not isinstance(origin, str):
            raise ValueError("name and origin must be strings")
        if version is None and action == "shadow":
            return cls(action, name, None, None, origin)
        if not isinstance(version, str) or not version or not isinstance(digest, str) or len(digest) != 64:
            raise ValueError("version and a sha256 of 64 hex digits are required")
        return cls(action, name, version, digest, origin)


def screening_policy(policies: Any) -> Screening | None:
    for policy in policies:
        if isinstance(policy, Screening):
            return policy
    return None


class Fleet:
    def __init__(self, config: FleetConfig, policy: Callable[[], Screening | None]) -> None:
        self.config = config
        self.gateway_id = config.gateway_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.state_key = f"{config.channel}:state"
        self._policy = policy
        self._client: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()  # the first subscription attempt ended, converged or failed
        self.connected = False
        self._outage = False
        self.counts: dict[str, int] = {"applied": 0, "refused": 0, "unchanged": 0, "invalid": 0}
        self.last: dict[str, Any] | None = None

    # --- lifecycle --------------------------------------------------------------------------------
    async def open(self, group: asyncio.TaskGroup) -> None:
        """Start listening; returns once the first attempt converged (or found Redis down)."""
        self._client = aioredis.Redis.from_url(
            self.config.redis_url,
            socket_connect_timeout=self.config.timeout_s,
            retry=Retry(NoBackoff(), 0),  # reconnecting is the listener's loop, which converges after it
            client_name=CLIENT_NAME,
        )
        self._task = group.create_task(self._listen())
        await self._first.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self.connected = False

    def status(self) -> dict[str, Any]:
        return {"gateway_id": self.gateway_id, "channel": self.config.channel, "connected": self.connected,
                **self.counts, "last": self.last}

    # --- publishing -------------------------------------------------------------------------------
    async def publish(self, action: str, name: str, model: LoadedModel | None) -> dict[str, Any]:
        """Tell the fleet about a change applied here; the report goes into the admin response."""
        if model is None:
            change = Change(action, name, None, None, self.gateway_id)
        else:
            change = Change(action, model.manifest.name, model.manifest.version, model.manifest.sha256,
                            self.gateway_id)
        payload = change.to_bytes()
        try:
            if self._client is None:
                raise RedisError("the fleet is not open")
            async with asyncio.timeout(self.config.timeout_s):
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.hset(self.state_key, "shadow" if action == "shadow" else "active", payload)
                    pipe.publish(self.config.channel, payload)
                    replies = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            FLEET_MESSAGES.labels(action, "publish_failed").inc()
            reason = f"redis: {exc}" if str(exc) else f"redis: {type(exc).__name__}"
            log.error("model change %s %s applied here but not published to the fleet: %s", action, change.key,
                      reason)
            return {"published": False, "error": reason}
        FLEET_MESSAGES.labels(action, "published").inc()
        return {"published": True, "subscribers": max(int(replies[-1]) - 1, 0)}  # not counting this gateway

    # --- receiving --------------------------------------------------------------------------------
    async def _listen(self) -> None:
        while True:
            try:
                await self._session()
            except (RedisError, OSError, TimeoutError) as exc:
                if not self._outage:  # once per outage, not once per retry
                    log.warning("fleet channel %s unavailable (retrying every %.1fs): %s", self.config.channel,
                                self.config.retry_s, exc)
                self._outage = True
            except Exception:  # never let a bug here end the state's TaskGroup (and its health checks)
                log.exception("fleet listener failed; subscribing again in %.1fs", self.config.retry_s)
            finally:
                self.connected = False
                self._first.set()
            await asyncio.sleep(self.config.retry_s)

    async def _session(self) -> None:
        assert self._client is not None
        pubsub = self._client.pubsub()
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await pubsub.subscribe(self.config.channel)
            self.connected, self._outage = True, False
            await self.converge()
            self._first.set()
            log.info("fleet: %s listening on %s", self.gateway_id, self.config.channel)
            await self._follow(pubsub)
        finally:
            await pubsub.aclose()

    async def _follow(self, pubsub: Any) -> None:
        """Apply each change heard; a quiet channel is pinged, and a missing PONG ends the session.

        A Redis that hangs (or a path to it that breaks without a FIN or RST) would otherwise leave the
        subscription waiting forever, deaf to the fleet and still reporting itself connected.
        """
        loop = asyncio.get_running_loop()
        pong_due: float | None = None  # when the PONG of a PING sent must have come
        while True:
            wait = self.config.keepalive_s if pong_due is None else max(pong_due - loop.time(), 0.0)
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            if message is None:
                if pong_due is not None and loop.time() >= pong_due:
                    raise TimeoutError(f"no PONG from Redis within {self.config.timeout_s}s")
                if pong_due is None:
                    async with asyncio.timeout(self.config.timeout_s):
                        await pubsub.ping()
                    pong_due = loop.time() + self.config.timeout_s
                continue
            pong_due = None  # anything heard proves the subscription alive
            if message.get("type") == "message":
                await self.receive(message["data"])

    async def converge(self) -> None:
        """Apply the fleet's recorded state (active model, then shadow); Redis errors propagate."""
        if self._client is None:
            return
        async with asyncio.timeout(self.config.timeout_s):
            state = await self._client.hgetall(self.state_key)
        for field in (b"active", b"shadow"):
            if field in state:
                await self.receive(state[field], converging=True)

    async def receive(self, raw: bytes | str, converging: bool = False) -> str:
        """Apply one change from the fleet; returns the outcome (applied, refused, unchanged, invalid, own)."""
        try:
            change = Change.parse(raw)
        except ValueError as exc:
            log.error("fleet: ignored a malformed message on %s: %s", self.config.channel, exc)
            self.counts["invalid"] += 1
            return "invalid"
        if change.origin == self.gateway_id and not converging:
            return "own"
        outcome, reason = await self._apply(change)
        FLEET_MESSAGES.labels(change.action, outcome).inc()
        self.counts[outcome] += 1
        self.last = {"action": change.action, "model": change.key, "origin": change.origin, "outcome": outcome,
                     "reason": reason}
        if outcome == "refused":
            log.error("fleet: refused %s of %s from %s: %s; the current model keeps serving", change.action,
                      change.key, change.origin, reason)
        elif outcome == "applied":
            log.info("fleet: %s of %s from %s applied", change.action, change.key, change.origin)
        return outcome

    async def _apply(self, change: Change) -> tuple[str, str]:
        policy = self._policy()
        if policy is None or not policy.enabled:
            return "refused", "the screening policy is not configured here"
        scorer = policy.scorer
        if change.version is None:  # shadow off
            if scorer is None or scorer.shadow is None:
                return "unchanged", ""
            await policy.set_shadow(None)
            return "applied", ""
        current: LoadedModel | None = None
        if scorer is not None:
            current = scorer.shadow if change.action == "shadow" else scorer.active
        if current is not None and current.key == change.key and current.manifest.sha256 == change.sha256:
            return "unchanged", ""
        try:
            manifest = await asyncio.to_thread(policy.registry.manifest, change.name, change.version)
        except ModelRefused as exc:
            return "refused", exc.reason
        except (OSError, ValueError, TypeError, KeyError) as exc:
            return "refused", f"model missing or unreadable here: {type(exc).__name__}: {exc}"
        if manifest.sha256 != change.sha256:
            assert change.sha256 is not None
            return "refused", f"checksum mismatch: here {manifest.sha256[:12]}, fleet {change.sha256[:12]}"
        try:
            previous = scorer.previous if scorer else None
            if change.action == "shadow":
                await policy.set_shadow(change.version, change.name)
            elif change.action == "rollback" and previous is not None and previous.key == change.key \
                    and previous.manifest.sha256 == change.sha256:
                await policy.rollback()  # the model is still loaded here and was verified then
            else:
                await policy.activate(change.version, change.name)  # load: file sha256, schema, smoke test
        except ModelRefused as exc:
            return "refused", exc.reason
        except LookupError as exc:
            return "refused", str(exc)
        return "applied", ""
