"""Fleet model changes: two real gateways (each its own app, listener and model folder) on a real Redis.

Each test uses its own channel (and state key) and deletes the state key at the end. Activating,
rolling back or shadowing on A follows on B; B refuses a model whose file does not match the
published checksum, or that it does not have, and keeps serving; a gateway started late converges
to the fleet's state; with Redis down, a local change still works and says it was not published.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.support import redis_server
from tests.support.screening_model import NAME, build_registry

from .conftest import Backends, Gateway, StartGateway, demo_config


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server.running() as url:
        yield url


@pytest.fixture
async def channel(redis_url: str) -> AsyncIterator[str]:
    name = f"portcullis:test:fleet:{uuid.uuid4().hex}"
    yield name
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.delete(f"{name}:state")
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_registry(tmp_path_factory.mktemp("fleet") / "models", ("v1", "v2"))


def registry_copy(built: Path, where: Path) -> Path:
    shutil.copytree(built, where)
    return where


def fleet_config(backends: Backends, models: Path, url: str, channel: str, gateway_id: str,
                 version: str = "v1") -> dict[str, Any]:
    return demo_config(
        backends,
        policies=[{"name": "screening", "config": {"models_dir": str(models), "version": version, "mode": "block"}}],
        fleet={"redis_url": url, "channel": channel, "gateway_id": gateway_id, "timeout_s": 1.0, "retry_s": 0.2},
    )


async def models(gw: Gateway) -> dict[str, Any]:
    async with gw.http.get(f"{gw.admin}/admin/models") as r:
        assert r.status == 200
        doc: dict[str, Any] = await r.json()
        return doc


async def post(gw: Gateway, action: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    async with gw.http.post(f"{gw.admin}/admin/models/{action}", json=body or {}) as r:
        return r.status, await r.json()


async def until(gw: Gateway, check: Any, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        doc = await models(gw)
        if check(doc):
            return doc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {timeout_s}s: {doc}")
        await asyncio.sleep(0.05)


def version_of(doc: dict[str, Any], which: str = "active") -> str | None:
    model = doc[which]
    return model["version"] if model else None


async def two(backends: Backends, start: StartGateway, built: Path, tmp_path: Path, url: str,
              channel: str) -> tuple[Gateway, Gateway, Path]:
    a = await start(fleet_config(backends, registry_copy(built, tmp_path / "a"), url, channel, "gw-a"))
    b_models = registry_copy(built, tmp_path / "b")
    b = await start(fleet_config(backends, b_models, url, channel, "gw-b"))
    return a, b, b_models


async def test_activate_rollback_and_shadow_follow_on_the_other_gateway(
    demo_backends: Backends, start_gateway: StartGateway, built: Path, tmp_path: Path, redis_url: str,
    channel: str,
) -> None:
    a, b, _ = await two(demo_backends, start_gateway, built, tmp_path, redis_url, channel)
    assert (await models(b))["fleet"]["connected"] is True
    status, doc = await post(a, "activate", {"version": "v2"})
    assert status == 200 and version_of(doc) == "v2"
    assert doc["fleet"] == {"published": True, "subscribers": 1}
    after = await until(b, lambda d: version_of(d) == "v2")
    assert after["previous"]["version"] == "v1" and after["fleet"]["applied"] == 1
    assert after["fleet"]["last"] == {"action": "activate", "model": f"{NAME}/v2", "origin": "gw-a",
                                      "outcome": "applied", "reason": ""}
    own = (await models(a))["fleet"]
    assert own["applied"] == own["unchanged"] == own["refused"] == 0  # the origin ignores its own message

    status, doc = await post(a, "rollback")
    assert status == 200 and version_of(doc) == "v1" and doc["fleet"]["published"] is True
    await until(b, lambda d: version_of(d) == "v1")

    status, doc = await post(a, "shadow", {"version": "v2"})
    assert status == 200 and doc["fleet"]["published"] is True
    await until(b, lambda d: version_of(d, "shadow") == "v2")
    status, doc = await post(a, "shadow", {"version": None})
    assert status == 200
    await until(b, lambda d: d["shadow"] is None)
    async with b.http.post(f"{b.url}/v1/echo", json={"message": "1' OR '1'='1' --"}) as r:
        assert r.status == 403  # B screens with the model the fleet chose


async def test_a_corrupt_or_missing_model_is_refused_and_the_current_one_keeps_serving(
    demo_backends: Backends, start_gateway: StartGateway, built: Path, tmp_path: Path, redis_url: str,
    channel: str,
) -> None:
    a, b, b_models = await two(demo_backends, start_gateway, built, tmp_path, redis_url, channel)
    onnx = b_models / NAME / "v2" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-64])  # B's copy of v2 no longer matches its checksum
    status, doc = await post(a, "activate", {"version": "v2"})
    assert status == 200 and version_of(doc) == "v2"  # A switches
    refused = await until(b, lambda d: d["fleet"]["refused"] == 1)
    assert version_of(refused) == "v1" and "checksum mismatch" in refused["fleet"]["last"]["reason"]
    async with b.http.post(f"{b.url}/v1/echo", json={"message": "hello"}) as r:
        assert r.status == 200  # still serving, with v1

    shutil.rmtree(b_models / NAME / "v2")  # and a version B does not have at all
    status, doc = await post(a, "rollback")
    assert status == 200 and version_of(doc) == "v1"
    status, doc = await post(a, "activate", {"version": "v2"})
    assert status == 200
    refused = await until(b, lambda d: d["fleet"]["refused"] == 2)
    assert version_of(refused) == "v1" and "missing" in refused["fleet"]["last"]["reason"]
    async with b.http.get(f"{b.admin}/metrics") as r:
        text = await r.text()
    assert 'portcullis_fleet_messages_total{action="activate",outcome="refused"}' in text


async def test_a_checksum_other_than_the_published_one_is_refused(
    demo_backends: Backends, start_gateway: StartGateway, built: Path, tmp_path: Path, redis_url: str,
    channel: str,
) -> None:
    """B's v2 is complete and self-consistent, but not the v2 the fleet activated: refused."""
    _, b, _ = await two(demo_backends, start_gateway, built, tmp_path, redis_url, channel)
    client = aioredis.Redis.from_url(redis_url)
    try:
        forged = json.dumps({"action": "activate", "name": NAME, "version": "v2", "sha256": "ab" * 32,
                             "origin": "gw-x"})
        assert await client.publish(channel, forged) >= 1
        await client.publish(channel, b"not json")
        await client.publish(channel, b'{"action": "explode"}')
    finally:
        await client.aclose()
    doc = await until(b, lambda d: d["fleet"]["refused"] == 1 and d["fleet"]["invalid"] == 2)
    assert version_of(doc) == "v1" and "checksum mismatch" in doc["fleet"]["last"]["reason"]


async def test_a_gateway_started_late_converges_to_the_fleet(
    demo_backends: Backends, start_gateway: StartGateway, built: Path, tmp_path: Path, redis_url: str,
    channel: str,
) -> None:
    a = await start_gateway(fleet_config(demo_backends, registry_copy(built, tmp_path / "a"), redis_url, channel,
                                         "gw-a"))
    assert (await post(a, "activate", {"version": "v2"}))[0] == 200
    assert (await post(a, "shadow", {"version": "v1"}))[0] == 200
    late = await start_gateway(fleet_config(demo_backends, registry_copy(built, tmp_path / "c"), redis_url,
                                            channel, "gw-c", version="v1"))
    doc = await models(late)  # converged before it started serving
    assert version_of(doc) == "v2" and version_of(doc, "shadow") == "v1"


async def test_redis_down_local_activation_works_and_says_it_was_not_published(
    demo_backends: Backends, start_gateway: StartGateway, built: Path, tmp_path: Path,
) -> None:
    gw = await start_gateway(fleet_config(demo_backends, registry_copy(built, tmp_path / "a"),
                                          "redis://127.0.0.1:1/0", "portcullis:test:fleet:down", "gw-a"))
    assert (await models(gw))["fleet"]["connected"] is False
    status, doc = await post(gw, "activate", {"version": "v2"})
    assert status == 200 and version_of(doc) == "v2"
    assert doc["fleet"]["published"] is False and doc["fleet"]["error"].startswith("redis:")
    status, doc = await post(gw, "rollback")
    assert status == 200 and version_of(doc) == "v1" and doc["fleet"]["published"] is False


class Cuttable:
    """A TCP proxy to Redis that can be cut (every connection dropped, new ones refused) and restored,
    or frozen (connections kept open, nothing passed on either way: a hung Redis) and thawed."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = True
        self.frozen = False
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self.frozen:  # swallowed: this connection is useless from now on
                        continue
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self) -> None:
        self.open = False
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.mark.parametrize("failure", ["cut", "hang"])
async def test_a_gateway_that_lost_redis_catches_up_when_it_is_back(
    demo_backends: Backends, start_gateway: StartGateway, built: Path, tmp_path: Path, redis_url: str,
    channel: str, failure: str,
) -> None:
    """B reaches Redis through a proxy that drops its connections (cut), or keeps them open and
    silent (hang: no FIN, no RST, as a hung Redis; only B's keepalive ping can find it)."""
    proxy = Cuttable(6379)
    await proxy.start()
    try:
        a = await start_gateway(fleet_config(demo_backends, registry_copy(built, tmp_path / "a"), redis_url, channel,
                                             "gw-a"))
        config = fleet_config(demo_backends, registry_copy(built, tmp_path / "b"),
                              f"redis://127.0.0.1:{proxy.port}/0", channel, "gw-b")
        config["fleet"]["keepalive_s"] = 0.3
        b = await start_gateway(config)
        await asyncio.sleep(1.0)  # several quiet periods: the pings are answered, B stays subscribed
        assert (await models(b))["fleet"]["connected"] is True
        if failure == "cut":
            proxy.cut()
        else:
            proxy.frozen = True
        await until(b, lambda d: d["fleet"]["connected"] is False, timeout_s=5.0)
        status, doc = await post(a, "activate", {"version": "v2"})
        assert status == 200 and doc["fleet"]["subscribers"] == 0  # B cannot hear it
        await asyncio.sleep(0.5)
        assert version_of(await models(b)) == "v1"
        proxy.frozen = False
        proxy.cut()  # drops any connection a frozen proxy swallowed
        proxy.open = True  # B subscribes again, reads the recorded state and converges
        doc = await until(b, lambda d: version_of(d) == "v2" and d["fleet"]["connected"] is True)
        assert doc["fleet"]["applied"] == 1
    finally:
        await proxy.stop()


async def test_a_hung_redis_costs_at_most_the_timeout(
    demo_backends: Backends, start_gateway: StartGateway, built: Path, tmp_path: Path,
) -> None:
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        config = fleet_config(demo_backends, registry_copy(built, tmp_path / "a"), url, "portcullis:test:hung", "gw")
        config["fleet"]["timeout_s"] = 0.3
        gw = await start_gateway(config)
        assert loop.time() - started < 5.0  # start-up waited one subscribe timeout, not forever
        started = loop.time()
        status, doc = await post(gw, "activate", {"version": "v2"})
        assert loop.time() - started < 2.0
        assert status == 200 and version_of(doc) == "v2" and doc["fleet"]["published"] is False
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_reload_converges_the_new_policy_to_the_fleet(
    demo_backends: Backends, start_gateway: StartGateway, built: Path, tmp_path: Path, redis_url: str,
    channel: str,
) -> None:
    import yaml

    a = await start_gateway(fleet_config(demo_backends, registry_copy(built, tmp_path / "a"), redis_url, channel,
                                         "gw-a"))
    raw = fleet_config(demo_backends, registry_copy(built, tmp_path / "b"), redis_url, channel, "gw-b")
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(raw))
    b = await start_gateway(raw, path)
    assert (await post(a, "activate", {"version": "v2"}))[0] == 200
    await until(b, lambda d: version_of(d) == "v2")
    async with b.http.post(f"{b.admin}/admin/reload") as r:
        assert r.status == 200
    assert version_of(await models(b)) == "v2"  # not the config's v1
