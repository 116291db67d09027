"""A tiny screening model trained in seconds, for tests: generated attacks, generated benign values.

No downloads and no system files: attacks come from `screening.corpus.generators`, benign text
from Faker and a few hand-written sentences, shaped like the real dataset. The model is exported
through the real `train.export`, so it is a complete registry entry (ONNX, manifest, golden inputs).
"""

from __future__ import annotations

import random
import shutil
from functools import lru_cache
from pathlib import Path

from screening import dataset
from screening.corpus import Sample, benign, generators, shaping
from screening.train import Fitted, export, fit, golden_records

NAME = "request-screening"
SENTENCES = (
    "Please send the invoice to the accounts team by Friday.", "I'd like two copies of the new edition.",
    "Can you update my address? I've moved to 12 Baker Street.", "The meeting is moved to 3pm, room B.",
    "Great book, though the ending felt rushed.", "Select your seat before boarding.", "order #4512 shipped",
    "Union Street bakery opens at 7", "My son's favourite is the dinosaur one", "What's the return policy?",
)


def tiny_rows(seed: int = 3, attacks_per_family: int = 40, benign_count: int = 900) -> list[dataset.Row]:
    rng = random.Random(seed)
    samples = [s for s in generators.generated(random.Random(seed), attacks_per_family)]
    samples += list(benign.faker_values(random.Random(seed + 1), benign_count))
    samples += [Sample(text, 0, "prose", "test-sentences", f"sentence:{i}") for i, text in enumerate(SENTENCES) for _ in range(5)]
    samples += list(benign.tricky(random.Random(seed + 2)))
    pool = [s.text for s in benign.faker_values(random.Random(seed + 3), 200)]

    def fill(r: random.Random) -> str:
        return r.choice(pool)

    rows = []
    for sample in samples:
        record = shaping.shape(sample, rng, fill)
        rows.append(dataset.Row(record, sample.label, sample.family, sample.source, sample.base,
                                dataset.split_of(sample.base, seed)))
    return rows


@lru_cache(maxsize=4)
def _fitted(seed: int) -> tuple[Fitted, tuple[dataset.Row, ...]]:
    rows = tiny_rows(seed)
    fitted = fit(rows, target_fpr=0.01, progress=False, params={"n_trees": 20, "folds": 2, "C": 4.0})
    return fitted, tuple(rows)


def build_registry(root: Path, versions: tuple[str, ...] = ("v1",), seed: int = 3, signature: str = "narrow") -> Path:
    """A registry under `root` with `versions` of the tiny model (the same model, one folder each),
    exported with the graph `signature` (narrow, as training now exports, or wide)."""
    fitted, rows = _fitted(seed)
    first: Path | None = None
    for version in versions:
        folder = root / NAME / version
        if first is None:
            export(fitted, folder, NAME, version, golden_records(rows)[:12], {"dataset": "tests", "seed": seed},
                   signature)
            first = folder
        else:
            shutil.copytree(first, folder)
            manifest = (folder / "manifest.json").read_text().replace(f'"version": "{first.name}"',
                                                                     f'"version": "{version}"')
            (folder / "manifest.json").write_text(manifest)
    return root
