"""The model lifecycle through the admin API: activate, refuse a corrupt model, roll back, shadow,
and a hot swap under concurrent load that fails no request."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.support.screening_model import NAME, build_registry

from .conftest import Backends, StartGateway, demo_config

SQLI = "1' OR '1'='1' --"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    root = build_registry(tmp_path / "models", ("v1", "v2"))
    corrupt = root / NAME / "v3"
    shutil.copytree(root / NAME / "v2", corrupt)
    (corrupt / "model.onnx").write_bytes((corrupt / "model.onnx").read_bytes()[:-100])
    return root


def config(backends: Backends, registry: Path) -> dict:
    return demo_config(backends, policies=[
        {"name": "screening", "config": {"models_dir": str(registry), "version": "v1", "mode": "block"}},
    ])


async def test_activate_refuse_rollback_and_shadow(demo_backends: Backends, start_gateway: StartGateway,
                                                   registry: Path) -> None:
    gw = await start_gateway(config(demo_backends, registry))
    async with gw.http.get(f"{gw.admin}/admin/models") as r:
        status = await r.json()
    assert status["active"]["version"] == "v1" and {"name": NAME, "version": "v3"} in status["available"]
    async with gw.http.post(f"{gw.admin}/admin/models/activate", json={"version": "v2"}) as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["active"]["version"] == "v2" and doc["previous"]["version"] == "v1"
    async with gw.http.post(f"{gw.admin}/admin/models/activate", json={"version": "v3"}) as r:
        assert r.status == 409
        doc = await r.json()
    assert "checksum" in doc["error"] and doc["active"]["version"] == "v2"  # the current one keeps serving
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": SQLI}) as r:
        assert r.status == 403
    async with gw.http.post(f"{gw.admin}/admin/models/rollback") as r:
        assert r.status == 200 and (await r.json())["active"]["version"] == "v1"
    async with gw.http.post(f"{gw.admin}/admin/models/shadow", json={"version": "v2"}) as r:
        assert r.status == 200 and (await r.json())["shadow"]["version"] == "v2"
    for message in ("hello", SQLI, "a normal sentence, with punctuation."):
        async with gw.http.post(f"{gw.url}/v1/echo", json={"message": message}) as r:
            await r.read()
    async with gw.http.get(f"{gw.admin}/admin/models") as r:
        status = await r.json()
    assert status["shadow_scored"] == 3 and status["shadow_disagreements"] == 0  # the same model agrees
    async with gw.http.post(f"{gw.admin}/admin/models/shadow", json={"version": None}) as r:
        assert (await r.json())["shadow"] is None


async def test_models_cli_talks_to_the_admin_api(demo_backends: Backends, start_gateway: StartGateway,
                                                 registry: Path) -> None:
    from gateway.__main__ import main

    gw = await start_gateway(config(demo_backends, registry))
    code = await asyncio.to_thread(main, ["models", "--admin", gw.admin, "activate", "v2"])
    assert code == 0
    code = await asyncio.to_thread(main, ["models", "--admin", gw.admin, "activate", "v3"])
    assert code == 1
    assert await asyncio.to_thread(main, ["models", "--admin", gw.admin, "rollback"]) == 0
    assert await asyncio.to_thread(main, ["models", "--root", str(registry), "list"]) == 0


async def test_hot_swap_under_load_fails_no_request(demo_backends: Backends, start_gateway: StartGateway,
                                                    registry: Path) -> None:
    gw = await start_gateway(config(demo_backends, registry))
    statuses: list[int] = []
    stop = asyncio.Event()

    async def client(i: int) -> None:
        n = 0
        while not stop.is_set() and n < 400:
            n += 1
            async with gw.http.post(f"{gw.url}/v1/echo", json={"message": f"order {i}-{n}, please"}) as r:
                await r.read()
                statuses.append(r.status)

    clients = [asyncio.create_task(client(i)) for i in range(32)]
    async def answered(count: int) -> None:
        # Swap only once that many requests were answered: each swap then falls among requests in flight
        # however slow the box is (a fixed 0.1 s sleep saw fewer than 100 answers at load average 8).
        for _ in range(600):
            if len(statuses) >= count:
                return
            await asyncio.sleep(0.05)

    for k, version in enumerate(("v2", "v1", "v2", "v3", "v1")):
        await answered(25 * (k + 1))
        async with gw.http.post(f"{gw.admin}/admin/models/activate", json={"version": version}) as r:
            assert r.status == (409 if version == "v3" else 200)
    await answered(150)
    stop.set()
    await asyncio.gather(*clients)
    assert len(statuses) > 100
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
