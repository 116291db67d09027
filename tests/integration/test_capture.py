"""Traffic capture through a real gateway, then retraining on it with `portcullis screening train --benign`.

Real requests (an API key, a bearer token, a cookie, a sensitive body field) go through a gateway
with the capture policy; the file must hold their records, and never the secrets. Sampling is
checked statistically; a request screening blocks is never captured; the captured file then trains
a model with the CLI, on a tiny dataset.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.__main__ import main
from screening import capture, dataset
from tests.support.screening_model import build_registry, tiny_rows

from .conftest import Backends, StartGateway, demo_config

HEADERS = ("user-agent", "cookie", "authorization", "x-partner-key", "x-api-key")


def capture_policy(path: Path, **config: Any) -> dict[str, Any]:
    return {"name": "capture", "config": {"path": str(path), "flush_interval_s": 0.05, "headers": list(HEADERS),
                                          **config}}


async def lines_of(path: Path, count: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The file's lines once it holds `count` of them (the flush is asynchronous)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        if len(lines) >= count or asyncio.get_running_loop().time() > deadline:
            return lines
        await asyncio.sleep(0.05)


def add_key(path: Path, consumer: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["keys", "add", "--file", str(path), "--consumer", consumer]) == 0
    return capsys.readouterr().out.strip()


async def test_sampled_requests_are_written_with_their_secrets_redacted(
    demo_backends: Backends, start_gateway: StartGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    keys = tmp_path / "keys.yaml"
    api_key = add_key(keys, "alice", capsys)
    out = tmp_path / "capture" / "traffic.jsonl"
    gw = await start_gateway(demo_config(demo_backends, policies=[
        {"name": "api_key", "config": {"key_file": str(keys), "header": "X-Partner-Key"}},
        capture_policy(out, sample_rate=1.0, redact_fields=["ssn"]),
    ]))
    bearer = "tok-" + "9f8e7d6c5b4a" * 3
    secrets = (api_key, bearer, "cookie-v4lue-77", "123-45-6789")
    headers = {"X-Partner-Key": api_key, "Authorization": f"Bearer {bearer}", "Cookie": "sid=cookie-v4lue-77",
               "User-Agent": "capture-test/1"}
    for i in range(5):
        body = {"message": f"order {i} for O'Brien", "labels": {"ssn": "123-45-6789", "team": "gw"}}
        async with gw.http.post(f"{gw.url}/v1/echo", json=body, headers=headers) as r:
            assert r.status == 200
    async with gw.http.get(f"{gw.url}/v1/items/book-1", headers=headers) as r:
        assert r.status == 200
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "no key"}) as r:
        assert r.status == 401  # refused requests are not captured
    lines = await lines_of(out, 6)
    text = out.read_text()
    for secret in secrets:
        assert secret not in text, secret
    assert len(lines) == 6
    first = dataset.Row.from_json(lines[0])
    assert first.source == "capture" and first.label == 0 and lines[0]["route"] == "echo.v1.EchoService.Echo"
    assert dict(first.record.headers) == {"user-agent": "capture-test/1", "cookie": capture.REDACTED,
                                          "authorization": capture.REDACTED, "x-partner-key": capture.REDACTED}
    assert dict(first.record.body) == {"message": "order 0 for O'Brien", "labels.ssn": capture.REDACTED,
                                       "labels.team": "gw"}
    assert lines[-1]["r"]["path"] == "/v1/items/book-1"
    async with gw.http.get(f"{gw.admin}/metrics") as r:
        assert 'portcullis_capture_records_total{outcome="written"}' in await r.text()


async def test_the_sample_rate_is_respected(demo_backends: Backends, start_gateway: StartGateway,
                                            tmp_path: Path) -> None:
    out = tmp_path / "sampled.jsonl"
    gw = await start_gateway(demo_config(demo_backends, policies=[
        capture_policy(out, sample_rate=0.25, routes=["echo.v1.EchoService.Echo"]),
    ]))
    n = 400

    async def send(i: int) -> None:
        async with gw.http.post(f"{gw.url}/v1/echo", json={"message": f"m{i}"}) as r:
            assert r.status == 200

    for start in range(0, n, 20):
        await asyncio.gather(*(send(i) for i in range(start, start + 20)))
    for i in range(50):  # another route, not listed: never captured
        async with gw.http.get(f"{gw.url}/v1/items/x{i}") as r:
            assert r.status == 200
    await gw.serving.state.current.runtime.pipeline.stop()  # flush what is buffered
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    # Binomial(400, 0.25): mean 100, standard deviation 8.7; outside 100 +- 40 fails about once in 10^5.
    assert 60 <= len(lines) <= 140, len(lines)
    assert all(line["r"]["path"] == "/v1/echo" for line in lines)
    assert len({line["r"]["body"][0][1] for line in lines}) == len(lines)  # each sampled request once


async def test_requests_screening_blocks_are_not_captured(demo_backends: Backends, start_gateway: StartGateway,
                                                          tmp_path: Path) -> None:
    models = build_registry(tmp_path / "models", ("v1",))
    out = tmp_path / "screened.jsonl"
    gw = await start_gateway(demo_config(demo_backends, policies=[
        {"name": "screening", "config": {"models_dir": str(models), "mode": "block"}},
        capture_policy(out, sample_rate=1.0),
    ]))
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "1' OR '1'='1' --"}) as r:
        assert r.status == 403
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "a quiet evening"}) as r:
        assert r.status == 200
    await lines_of(out, 1)
    await asyncio.sleep(0.2)  # a blocked request's line would have been flushed by now
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["r"]["body"] for line in lines] == [[["message", "a quiet evening"]]]


async def test_bad_capture_config_is_refused_at_start_up(demo_backends: Backends, start_gateway: StartGateway,
                                                        tmp_path: Path) -> None:
    from gateway.policies import PolicyConfigError

    for config in ({"sample_rate": 1.5}, {"redact_fields": ["[]"]}, {"path": str(tmp_path / "x"), "bogus": 1}):
        with pytest.raises(PolicyConfigError, match="policies.0.config"):
            await start_gateway(demo_config(demo_backends, policies=[{"name": "capture", "config": config}]))
    per_route = demo_config(demo_backends, policies=[{"name": "capture", "config": {}}])
    per_route["services"]["echo.v1.EchoService"]["policies"] = {"capture": {"path": "elsewhere.jsonl"}}
    with pytest.raises(ValueError, match="global setting only"):
        await start_gateway(per_route)


def test_train_with_captured_traffic_as_benign_background(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "tiny.jsonl.gz"
    dataset.write(tiny_rows(seed=5, attacks_per_family=15, benign_count=300), data)
    captured = tmp_path / "traffic.jsonl"
    with captured.open("wb") as out:
        for i in range(120):
            rec = dataset.RequestRecord.from_json({"method": "POST", "path": "/v1/orders",
                                                   "body": [["note", f"deliver to door {i}, ring twice"]]})
            out.write(capture.line(rec, f"req-{i}", "shop.v1.Orders.Create", 0.0))
    models = tmp_path / "models"
    argv = ["screening", "train", "--data", str(data), "--benign", str(captured), "--benign", str(captured),
            "--out", str(models), "--version", "retrained", "--quiet", "--target-fpr", "0.01",
            "--params", json.dumps({"n_trees": 10, "folds": 2})]
    assert main(argv) == 0
    assert "120 captured requests as benign background" in capsys.readouterr().out
    manifest = json.loads((models / "request-screening" / "retrained" / "manifest.json").read_text())
    assert manifest["data"]["capture"] == [str(captured), str(captured)]
    assert "capture/captured" in manifest["data"]["sources"]
    assert (models / "request-screening" / "retrained" / "model.onnx").stat().st_size > 0
    missing = [*argv[:5], str(tmp_path / "nope.jsonl"), *argv[8:]]
    assert main(missing) == 2


async def test_an_unwritable_capture_file_never_fails_a_request(demo_backends: Backends, start_gateway: StartGateway,
                                                               tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the capture folder should be")
    gw = await start_gateway(demo_config(demo_backends, policies=[
        capture_policy(blocker / "traffic.jsonl", sample_rate=1.0),
    ]))
    for _ in range(3):
        async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "hi"}) as r:
            assert r.status == 200
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        async with gw.http.get(f"{gw.admin}/metrics") as r:
            text = await r.text()
        if 'portcullis_capture_records_total{outcome="failed"}' in text or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert 'portcullis_capture_records_total{outcome="failed"}' in text
