"""Each descriptor source serves the same routes: generated stubs, a FileDescriptorSet, reflection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import protos
from translators.descriptors import DescriptorError, from_descriptor_set, from_reflection

from .conftest import Backends, StartGateway, demo_config


async def _exercise(start_gateway: StartGateway, raw: dict[str, Any]) -> None:
    gw = await start_gateway(raw)
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "x", "repeat": 3}) as r:
        assert r.status == 200
        assert (await r.json())["message"] == "xxx"
    async with gw.http.get(f"{gw.url}/v1/shelves/1/books", params={"genre": "FICTION"}) as r:
        assert r.status == 200, await r.text()
        assert all(b["genre"] == "FICTION" for b in (await r.json())["books"])
    async with gw.http.get(f"{gw.url}/v1/shelves/404") as r:
        assert r.status == 404


async def test_descriptor_set_source(demo_backends: Backends, start_gateway: StartGateway) -> None:
    raw = demo_config(demo_backends, descriptors=[{"kind": "descriptor_set", "path": str(protos.DESCRIPTOR_SET)}])
    await _exercise(start_gateway, raw)


async def test_reflection_source(demo_backends: Backends, start_gateway: StartGateway) -> None:
    raw = demo_config(demo_backends, descriptors=[
        {"kind": "reflection", "backend": "echo"},
        {"kind": "reflection", "backend": "library", "services": ["library.v1.LibraryService"]},
    ])
    await _exercise(start_gateway, raw)


async def test_reflection_lists_only_application_services(demo_backends: Backends) -> None:
    infos = await asyncio.to_thread(from_reflection, demo_backends.echo.address)
    names = [s.name for s in infos]
    assert names == ["echo.v1.EchoService"]


@pytest.mark.filterwarnings("ignore")
def test_unreachable_reflection_backend_fails_clearly() -> None:
    with pytest.raises(DescriptorError, match="not reachable"):
        from_reflection("127.0.0.1:1", timeout_s=0.3)


def test_corrupt_descriptor_set(tmp_path: Any) -> None:
    bad = tmp_path / "bad.binpb"
    bad.write_bytes(b"\xff\x00 not a descriptor set")
    with pytest.raises(DescriptorError):
        from_descriptor_set(bad)
    with pytest.raises(DescriptorError):
        from_descriptor_set(tmp_path / "absent.binpb")
