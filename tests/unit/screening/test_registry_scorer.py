"""Registry and Scorer: verified loads, refusals that change nothing, swaps by reference, batching."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from screening import features
from screening.inference import Scorer
from screening.record import from_parts
from screening.registry import ModelRefused, ModelRegistry, _bind_narrow, load_folder
from tests.support.screening_model import NAME, build_registry


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_registry(tmp_path_factory.mktemp("models"), ("v1", "v2"))


@pytest.fixture(scope="module")
def wide_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model exported with the wide signature (as `2026.11.29-2` was): kept loadable for rollback."""
    return build_registry(tmp_path_factory.mktemp("wide"), ("v1",), signature="wide")


def _copy(root: Path, tmp_path: Path, version: str = "v1") -> Path:
    folder = tmp_path / NAME / version
    shutil.copytree(root / NAME / "v1", folder)
    return folder


def rows(n: int) -> np.ndarray:
    records = [from_parts("POST", "/v1/echo", [], {}, {"message": f"hello {i}' or 1=1--" if i % 2 else f"hi {i}"})
               for i in range(n)]
    return features.extract_many(records)


def test_lists_and_loads_the_latest(root: Path) -> None:
    registry = ModelRegistry(root)
    assert registry.names() == [NAME] and registry.versions(NAME) == ["v1", "v2"]
    model = registry.load(NAME)
    assert model.key == f"{NAME}/v2" and model.describe()["feature_schema"] == features.SCHEMA


def test_a_corrupt_model_file_is_refused(root: Path, tmp_path: Path) -> None:
    folder = _copy(root, tmp_path)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelRefused, match="checksum mismatch"):
        load_folder(folder)


def test_a_truncated_model_with_a_matching_checksum_is_refused(root: Path, tmp_path: Path) -> None:
    from screening.manifest import file_sha256

    folder = _copy(root, tmp_path)
    (folder / "model.onnx").write_bytes(b"not an onnx model")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"] = file_sha256(folder / "model.onnx")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelRefused, match="onnxruntime cannot load it"):
        load_folder(folder)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"feature_schema": "f0-p0-000000000000"}, "feature schema"),
        ({"golden": []}, "no golden inputs"),
        ({"golden": "shift"}, "smoke test"),
        ({"weights": [1.0, 2.0]}, "explanation weights"),
    ],
)
def test_incompatible_manifests_are_refused(root: Path, tmp_path: Path, change: dict, reason: str) -> None:
    folder = _copy(root, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    if change.get("golden") == "shift":
        manifest["golden"][0]["score"] += 0.25
    else:
        manifest.update(change)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelRefused, match=reason):
        load_folder(folder)


def test_path_segments_only(root: Path) -> None:
    with pytest.raises(ModelRefused):
        ModelRegistry(root).load(NAME, "../v1")


async def test_batched_and_inline_scores_agree_and_batches_form(root: Path) -> None:
    model = ModelRegistry(root).load(NAME, "v1")
    sizes: list[int] = []

    class Observer:
        def batch(self, size: int, seconds: float) -> None:
            sizes.append(size)

    batched = Scorer(model, mode="batch", observer=Observer())
    batched.start()
    inline = Scorer(model, mode="inline")
    try:
        X = rows(40)
        together = await asyncio.gather(*(batched.score(X[i : i + 1], timeout_s=5) for i in range(40)))
        alone = [inline.score(X[i : i + 1], timeout_s=5) for i in range(40)]
        for a, b in zip(together, await asyncio.gather(*alone)):
            assert np.allclose(a.values, b.values, atol=1e-6)
        assert max(sizes) > 1 and sum(sizes) >= 40  # concurrent requests shared runs
    finally:
        batched.close()


async def test_swap_rollback_and_shadow(root: Path) -> None:
    registry = ModelRegistry(root)
    v1, v2 = registry.load(NAME, "v1"), registry.load(NAME, "v2")
    scorer = Scorer(v1, mode="batch")
    scorer.start()
    try:
        held = scorer.active
        scorer.activate(v2)
        assert scorer.active is v2 and scorer.previous is v1 and held is v1
        scored = await scorer.score(rows(2), held, timeout_s=5)  # a request keeps the model it started with
        assert scored.model is v1
        scorer.set_shadow(v1)
        scored = await scorer.score(rows(3), timeout_s=5)
        assert scored.model is v2 and scored.shadow is v1 and scored.shadow_values is not None
        assert np.allclose(scored.values, scored.shadow_values)
        assert scorer.rollback() is v1 and scorer.previous is v2
    finally:
        scorer.close()


@pytest.mark.parametrize("k", [1, 3, 8, 12])
def test_top_features_match_the_dense_computation(root: Path, k: int) -> None:
    model = load_folder(root / NAME / "v1")
    X = rows(30)
    X[3] = 0.0  # nothing present: only the features whose absence pushes the score up
    for vector in X:
        fast = model.top_features(vector, k)
        dense = features.top_contributions(vector, model.weights, k, None, model.baseline)
        assert [v for _, v in fast] == [v for _, v in dense]
        for value in {v for _, v in dense}:  # equal contributions may come in either order
            assert {n for n, v in fast if v == value} == {n for n, v in dense if v == value}
    assert model.top_features(X[0], 0) == [] and model.top_features(X[0][:10], 3) == []


async def test_score_now_is_inline_only(root: Path) -> None:
    model = load_folder(root / NAME / "v1")
    X = rows(2)
    inline, batch = Scorer(model, mode="inline"), Scorer(model, mode="batch")
    batch.start()
    try:
        now = inline.score_now(X, model)
        assert now is not None and np.allclose(now.values, model.run(X))
        assert batch.score_now(X, model) is None  # batched scoring is awaited, never run on the loop
        assert np.allclose((await batch.score(X, model, 1.0)).values, now.values)
    finally:
        batch.close()


@pytest.mark.parametrize("signature", ["narrow", "wide"])
def test_one_row_runs_through_its_binding_with_the_sessions_floats(
    root: Path, wide_root: Path, signature: str
) -> None:
    """`run` of one row (the gateway's case) goes through a per-thread I/O binding: the same floats as a
    plain `session.run`, rows never mixed up between calls or threads."""
    model = load_folder((root if signature == "narrow" else wide_root) / NAME / "v1")
    assert model.narrow == (signature == "narrow")
    X = rows(12)

    def feeds(x: np.ndarray) -> dict[str, np.ndarray]:
        return model.narrow_feeds(x) if model.narrow else {"X": x}

    plain = [np.concatenate(model.session.run(["score", "attack_probability", "anomaly"], feeds(X[i : i + 1])),
                            axis=1) for i in range(len(X))]
    for i in range(len(X)):
        got = model.run(X[i : i + 1])
        assert got.shape == (1, 3) and got.tobytes() == plain[i].tobytes()
    first = model.run(X[:1])
    model.run(X[1:2])
    assert first.tobytes() == plain[0].tobytes()  # a result is a copy, not the bound buffer

    async def in_threads() -> list[np.ndarray]:
        return await asyncio.gather(*(asyncio.to_thread(model.run, X[i : i + 1]) for i in range(len(X))))

    assert [r.tobytes() for r in asyncio.run(in_threads())] == [p.tobytes() for p in plain]


def test_the_public_binding_run_scores_as_the_native_one(root: Path) -> None:
    """`_runner` calls the session's C-level `run_with_iobinding` with one `RunOptions`; an onnxruntime
    without those attributes gets the public method: both fill the bound buffers with the same floats."""
    model = load_folder(root / NAME / "v1")
    X = rows(6)
    native = [model.run(X[i : i + 1]).tobytes() for i in range(len(X))]
    public = _bind_narrow(model.session, native=False)
    assert public[2] is None and _bind_narrow(model.session)[2] is not None
    run, binding, options, dense, sums, scores = public
    for i in range(len(X)):
        dense[...] = X[i, features.DENSE_COLUMNS]
        sums[...] = model.gram_table @ X[i]
        run(binding, options)
        assert scores.tobytes() == native[i]


def test_both_signatures_score_alike(root: Path, wide_root: Path) -> None:
    """The same fitted model exported wide and narrow: the same scores to float32 noise, one row (the
    bound path) or a batch, and the same explanations (they read the vector and the manifest)."""
    narrow, wide = load_folder(root / NAME / "v1"), load_folder(wide_root / NAME / "v1")
    X = rows(24)
    assert np.abs(narrow.run(X) - wide.run(X)).max() < 1e-4
    for i in range(len(X)):
        assert np.abs(narrow.run(X[i : i + 1]) - narrow.run(X)[i]).max() < 1e-6
        assert narrow.top_features(X[i], 3) == wide.top_features(X[i], 3)


def test_a_manifest_whose_signature_is_not_the_graphs_is_refused(root: Path, wide_root: Path, tmp_path: Path) -> None:
    for source, signature in ((root, "wide"), (wide_root, "narrow")):
        folder = tmp_path / source.name / NAME / "v1"
        shutil.copytree(source / NAME / "v1", folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["signature"] = signature
        manifest["grams"] = {"logit": [0.0] * 3891, "rare": [0.0] * 3891}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ModelRefused, match="signature"):
            load_folder(folder)
    folder = tmp_path / "short" / NAME / "v1"
    shutil.copytree(root / NAME / "v1", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["grams"]["rare"] = manifest["grams"]["rare"][:-1]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelRefused, match="n-gram weight tables"):
        load_folder(folder)


async def test_narrow_batches_score_as_one_by_one(root: Path) -> None:
    model = load_folder(root / NAME / "v1")
    scorer = Scorer(model, mode="batch", workers=1)
    scorer.start()
    try:
        X = rows(6)
        got = await asyncio.gather(*(scorer.score(X[i : i + 1], model) for i in range(6)))
        for i, scores in enumerate(got):
            assert np.abs(scores.values - model.run(X[i : i + 1])).max() < 1e-6
    finally:
        scorer.close()
