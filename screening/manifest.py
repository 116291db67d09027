"""The model manifest: what a model is, what it was trained on, and how to check it before use.

`models/<name>/<version>/manifest.json` sits beside `model.onnx`. The runtime trusts nothing in a
model file that its manifest does not vouch for: the file's sha256, the feature schema it expects
(`features.SCHEMA`), and golden inputs with the scores it must reproduce (the smoke test). The
decision threshold is data here, not code: the policy uses it unless the route config sets one.
`signature` says which inputs the graph takes (wide or narrow); a narrow model's n-gram weight
tables live here too, covered by the golden scores (they change every score).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MODEL = "model.onnx"


@dataclass(frozen=True)
class Golden:
    """One smoke-test input: a record (as JSON) and the score the model gave it when exported."""

    record: dict[str, Any]
    score: float


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    feature_schema: str
    n_features: int
    sha256: str
    threshold: float
    created: str = ""
    thresholds: dict[str, float] = field(default_factory=dict)  # "fpr<=0.5%": score
    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # dataset, seed, sources with counts and licences
    training: dict[str, Any] = field(default_factory=dict)  # parameters and library versions
    weights: list[float] = field(default_factory=list)  # classifier weight per feature, for explanations
    baseline: list[float] = field(default_factory=list)  # mean benign feature vector: explanations are relative to it
    golden: list[Golden] = field(default_factory=list)
    # The graph's inputs: "wide" (`X` [N, F], the whole vector) or "narrow" (`dense` [N, 116], `gram_logit`
    # and `gram_rare` [N, 1]: see `export.to_narrow_model`); a manifest without it is wide.
    signature: str = "wide"
    # Narrow only: per n-gram column (`rows.NGRAMS`), the classifier weight (`logit`) and the 0/1 rare
    # weight (`rare`) that serving sums over a request's n-grams; exact float32 values.
    grams: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Manifest:
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        known["golden"] = [Golden(**g) for g in doc.get("golden", [])]
        return cls(**known)

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / MANIFEST
        path.write_text(json.dumps(self.to_json(), indent=1, sort_keys=False) + "\n")
        return path

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        return cls.from_json(json.loads((folder / MANIFEST).read_text()))


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (model files, checked against their manifests)."""
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
