"""The model repository and the dynamic batcher, on the shipped digits model and generated ones."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from screening.serving.batcher import Batcher
from screening.serving.errors import LoadFailed, ModelNotFound, ModelNotReady, QueueFull
from screening.serving.model import LoadedModel, load
from screening.serving.repository import ModelRepository, version_key
from tests.support.inference_models import add_version, build_repository, echo_model, write_version


class Runs:
    def __init__(self) -> None:
        self.rows: list[int] = []

    def executed(self, model: LoadedModel, rows: int, queue_s: Sequence[float], compute_s: float) -> None:
        self.rows.append(rows)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_repository(tmp_path / "models")


def x(n: int = 1) -> dict[str, np.ndarray]:
    return {"input": np.full((n, 64), 3.0, np.float32)}


def test_natural_version_order() -> None:
    assert sorted(["10", "9", "2026.11.30-1", "2026.2.1-1"], key=version_key) == ["9", "10", "2026.2.1-1",
                                                                                     "2026.11.30-1"]


def test_loader_reads_the_signature_and_refuses_bad_models(root: Path) -> None:
    model = load(root / "digits" / "1", "digits", "1")
    assert [s.describe() for s in model.inputs] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert model.settings.max_batch_size == 64 and model.settings.batching
    with pytest.raises(LoadFailed, match="no variable first dimension"):
        load(root / "double" / "1", "double", "1", override={"max_batch_size": 4})
    broken = add_version(root, "digits", "1", "2", broken=True)
    with pytest.raises(LoadFailed, match="checksum mismatch"):
        load(broken, "digits", "2")
    (broken / "manifest.json").write_text("{")
    with pytest.raises(LoadFailed, match="unreadable manifest"):
        load(broken, "digits", "2")


async def test_batches_form_from_concurrent_requests_and_not_when_off(root: Path) -> None:
    for enabled, most in ((True, 8), (False, 1)):
        runs = Runs()
        model = load(root / "digits" / "1", "digits", "1",
                     override={"max_batch_size": 8, "dynamic_batching": {"enabled": enabled, "max_queue_delay_us": 20000}})
        batcher = Batcher(model, runs)
        batcher.start()
        results = await asyncio.gather(*(batcher.infer(x(), 1) for _ in range(16)))
        await batcher.close()
        assert sum(runs.rows) == 16 and max(runs.rows) == most
        assert all(r.outputs["probabilities"].shape == (1, 10) for r in results)
        if enabled:  # 16 requests queued at once: full batches (a slow machine may split one)
            assert len(runs.rows) <= 3 and results[0].batch_rows >= 4


async def test_batch_sizes_share_a_run_and_other_shapes_do_not(root: Path) -> None:
    runs = Runs()
    digits = load(root / "digits" / "1", "digits", "1", override={"dynamic_batching": {"max_queue_delay_us": 20000}})
    batcher = Batcher(digits, runs)
    batcher.start()
    results = await asyncio.gather(batcher.infer(x(2), 2), batcher.infer(x(3), 3), batcher.infer(x(1), 1))
    await batcher.close()
    assert [r.outputs["label"].shape for r in results] == [(2,), (3,), (1,)]
    assert runs.rows == [6]
    folder = write_version(root / "echo" / "1", echo_model(), {"serving": {
        "max_batch_size": 8, "dynamic_batching": {"max_queue_delay_us": 20000}}})
    runs = Runs()
    batcher = Batcher(load(folder, "echo", "1"), runs)
    batcher.start()
    widths = (2, 2, 5, 2)
    results = await asyncio.gather(*(batcher.infer({"x": np.full((1, w), w, np.float32)}, 1) for w in widths))
    await batcher.close()
    assert [r.outputs["y"].tolist() for r in results] == [[[w] * w] for w in widths]
    assert runs.rows == [2, 1, 1]  # the width-5 request blocks the queue's head: it runs alone, then the last


async def test_full_queue_and_closed_batcher(root: Path) -> None:
    model = load(root / "digits" / "1", "digits", "1", override={"max_queue_size": 2, "dynamic_batching": {
        "enabled": False}})
    batcher = Batcher(model)  # not started: nothing leaves the queue
    first = [asyncio.ensure_future(batcher.infer(x(), 1)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await batcher.infer(x(), 1)
    batcher.start()
    await batcher.close()  # drains what was queued
    assert all(f.result().outputs for f in first)
    with pytest.raises(ModelNotReady, match="unloading"):
        await batcher.infer(x(), 1)


async def test_repository_swap_keeps_serving_and_refuses_broken_versions(root: Path) -> None:
    repo = ModelRepository(root, defaults={"instances": 1})
    await repo.start()
    assert repo.ready() and repo.ready_versions("digits") == ["1"]
    with pytest.raises(ModelNotFound):
        repo.resolve("nope")
    with pytest.raises(ModelNotFound):
        repo.resolve("digits", "4")
    v1 = repo.resolve("digits")
    add_version(root, "digits", "1", "2")
    async with repo.lease("digits") as held:
        assert held is v1
        swap = asyncio.ensure_future(repo.load("digits"))
        for _ in range(200):  # the load runs in a thread: wait for the swap, not a fixed time
            if repo.resolve("digits").model.version == "2":
                break
            await asyncio.sleep(0.05)
        assert repo.resolve("digits").model.version == "2"  # swapped while v1 is still held
        await asyncio.sleep(0.1)
        assert not swap.done()  # retirement waits for the lease
        assert (await held.infer(x()))  # the held version still serves
    await swap
    with pytest.raises(ModelNotReady):
        repo.resolve("digits", "1")  # on disk, no longer served
    add_version(root, "digits", "2", "3", broken=True)
    with pytest.raises(LoadFailed, match="checksum"):
        await repo.load("digits")
    assert repo.resolve("digits").model.version == "2"
    states = {(e.name, e.version): (e.state, e.reason) for e in repo.index()}
    assert states[("digits", "2")] == ("READY", "") and states[("digits", "3")][0] == "UNAVAILABLE"
    assert "checksum" in states[("digits", "3")][1] and states[("digits", "1")] == ("UNAVAILABLE", "unloaded")
    same = repo.resolve("digits")
    (root / "digits" / "3").rename(root / "digits" / ".broken")
    await repo.load("digits")
    assert repo.resolve("digits") is same  # unchanged files: kept, not loaded again
    await repo.unload("digits")
    with pytest.raises(ModelNotReady):
        repo.resolve("digits")
    with pytest.raises(ModelNotFound):
        await repo.unload("nope")
    await repo.close()


async def test_version_policies(root: Path) -> None:
    for version in ("2", "10"):
        add_version(root, "digits", "1", version)
    for versions, expected in (("all", ["1", "2", "10"]), ("latest", ["10"]), (["2"], ["2"])):
        repo = ModelRepository(root, overrides={"digits": {"versions": versions}})
        await repo.load("digits")
        assert repo.ready_versions("digits") == expected
        await repo.close()
    repo = ModelRepository(root, overrides={"digits": {"versions": "latest", "latest_count": 2}})
    await repo.load("digits")
    assert repo.ready_versions("digits") == ["2", "10"]
    await repo.close()
