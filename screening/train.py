"""Training: dataset rows in, a verified ONNX model and its manifest out (training side).

`fit(rows)` splits the training rows by base into a fitting part and a calibration part, extracts
features (with a progress bar), fits a `ScreeningModel` on the first (its combiner learning from
folds that hold whole attack families out), and picks the threshold on the second: the score that benign calibration traffic exceeds at most `target_fpr` of the time.
The held-out test split is never read here. `export` writes `model.onnx` (narrow by default: `export.to_narrow_model`) and
`manifest.json`, checks ONNX parity with scikit-learn on the calibration rows, and records golden
inputs, the data provenance and the library versions. `narrow_version` re-exports a shipped wide
version narrow, without training (the same fitted model).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from screening import capture, dataset, features
from screening.corpus import packages
from screening.detectors import ScreeningModel
from screening.export import check_parity, run_graph, to_model, to_narrow_model
from screening.manifest import MODEL, Golden, Manifest, file_sha256
from screening.registry import load_folder

CALIBRATION_SHARE = 0.15
PARITY_TOLERANCE = 1e-4


@dataclass
class Fitted:
    model: ScreeningModel
    threshold: float
    calibration: dict[str, Any]
    rows: int
    calibration_X: np.ndarray
    baseline: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)


def featurize(rows: Sequence[dataset.Row], progress: bool = True, desc: str = "features") -> np.ndarray:
    X = np.zeros((len(rows), features.N_FEATURES), dtype=np.float32)
    for i, row in enumerate(tqdm(rows, desc=desc, unit="req", disable=not progress, mininterval=0.5)):
        X[i] = features.extract(row.record)
    return X


def _calibration_part(base: str) -> bool:
    digest = hashlib.sha256(f"calibration:{base}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < CALIBRATION_SHARE


def threshold_at(benign_scores: np.ndarray, target_fpr: float) -> float:
    """The smallest score that at most `target_fpr` of the benign scores exceed."""
    if len(benign_scores) == 0:
        return 0.5
    ordered = np.sort(benign_scores)
    allowed = int(np.floor(target_fpr * len(ordered)))
    index = len(ordered) - allowed - 1
    return float(min(max(ordered[max(index, 0)] + 1e-6, 1e-6), 1.0))


def fit(rows: Sequence[dataset.Row], *, target_fpr: float = 0.005, progress: bool = True,
        params: dict[str, Any] | None = None) -> Fitted:
    training = [r for r in rows if r.split == "train"]
    fitting = [r for r in training if not _calibration_part(r.base)]
    calibration = [r for r in training if _calibration_part(r.base)]
    X = featurize(fitting, progress, "features (fit)")
    y = np.asarray([r.label for r in fitting])
    families = np.asarray([r.family for r in fitting])
    model = ScreeningModel(**(params or {}))
    with tqdm(total=model.folds + 3, desc="fit", disable=not progress) as bar:
        model.fit(X, y, progress=bar, groups=families)
    Xc = featurize(calibration, progress, "features (calibration)")
    yc = np.asarray([r.label for r in calibration])
    scores = model.score(Xc)
    threshold = threshold_at(scores[yc == 0], target_fpr)
    detected = float(np.mean(scores[yc == 1] >= threshold)) if np.any(yc == 1) else 0.0
    calibration_info = {
        "rows": len(calibration), "target_fpr": target_fpr, "threshold": threshold,
        "detection": round(detected, 4), "fpr": round(float(np.mean(scores[yc == 0] >= threshold)), 5),
    }
    counts = dict(Counter(f"{r.source}/{r.family}" for r in fitting))
    baseline = X[y == 0].mean(axis=0) if np.any(y == 0) else np.zeros(X.shape[1], dtype=np.float32)
    return Fitted(model, threshold, calibration_info, len(fitting), Xc[:512], baseline, counts)


def golden_records(rows: Sequence[dataset.Row]) -> list[dict[str, Any]]:
    """A few benign and attack records per family, the model's smoke test (from the training split)."""
    picked: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.split != "train":
            continue
        bucket = picked.setdefault(f"{row.label}:{row.family}", [])
        if len(bucket) < 2:
            bucket.append(row.record.to_json())
    return [record for records in picked.values() for record in records]


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("numpy", "scikit-learn", "skl2onnx", "onnx", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def export(fitted: Fitted, folder: Path, name: str, version: str, golden: list[dict[str, Any]],
           data: dict[str, Any], signature: str = "narrow") -> Manifest:
    """Write `model.onnx` (the wide graph, or the narrow one made from it) and `manifest.json`; golden
    scores are the graph's own, run as serving runs it."""
    folder.mkdir(parents=True, exist_ok=True)
    proto = to_model(fitted.model)
    tables: dict[str, list[float]] = {}
    if signature == "narrow":
        proto, tables = to_narrow_model(proto)
    blob = proto.SerializeToString()
    parity = check_parity(fitted.model, blob, fitted.calibration_X, tables or None)
    if max(parity.values()) > PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX and scikit-learn disagree: {parity}")
    (folder / MODEL).write_bytes(blob)
    from screening.record import RequestRecord

    golden_X = features.extract_many([RequestRecord.from_json(g) for g in golden])
    golden_scores = run_graph(blob, golden_X, tables or None)[:, 0]
    manifest = Manifest(
        name=name,
        version=version,
        feature_schema=features.SCHEMA,
        n_features=features.N_FEATURES,
        sha256=file_sha256(folder / MODEL),
        threshold=round(fitted.threshold, 6),
        created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        thresholds={f"fpr<={fitted.calibration['target_fpr']:.2%}": round(fitted.threshold, 6)},
        metrics={"calibration": fitted.calibration, "parity": parity},
        data={**data, "fitting_rows": fitted.rows, "fitting_counts": fitted.counts},
        training={"params": fitted.model.get_params(), "libraries": library_versions()},
        weights=[round(float(w), 5) for w in fitted.model.feature_weights()],
        baseline=[round(float(b), 5) for b in fitted.baseline],
        golden=[Golden(g, float(s)) for g, s in zip(golden, golden_scores)],
        signature=signature,
        grams=tables,
    )
    manifest.write(folder)
    load_folder(folder, name, version)  # the serving loader must accept what we wrote
    return manifest


def narrow_version(source: Path, folder: Path, version: str) -> Manifest:
    """A wide model version re-exported narrow, as a new version: the same fitted model (its graph
    rewritten by `export.to_narrow_model`, no training), threshold, explanations, data and metrics;
    golden scores from the new graph, which must agree with the wide one's to float32 noise."""
    import dataclasses

    import onnx

    from screening.record import RequestRecord

    wide = Manifest.read(source)
    if wide.signature != "wide":
        raise ValueError(f"{source}: already {wide.signature}")
    proto, tables = to_narrow_model(onnx.load(str(source / MODEL)))
    blob = proto.SerializeToString()
    golden_X = features.extract_many([RequestRecord.from_json(g.record) for g in wide.golden])
    scores = run_graph(blob, golden_X, tables)[:, 0]
    wide_scores = run_graph((source / MODEL).read_bytes(), golden_X)[:, 0]
    drift = float(np.max(np.abs(scores - wide_scores)))
    if drift > PARITY_TOLERANCE:
        raise RuntimeError(f"the narrow graph disagrees with {source} by {drift:.2e} on the golden inputs")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL).write_bytes(blob)
    metrics = {**wide.metrics, "narrow": {"from": f"{wide.name}/{wide.version}", "golden_drift": drift}}
    manifest = dataclasses.replace(
        wide, version=version, sha256=file_sha256(folder / MODEL),
        created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), metrics=metrics,
        golden=[Golden(g.record, float(s)) for g, s in zip(wide.golden, scores)], signature="narrow", grams=tables,
    )
    manifest.write(folder)
    load_folder(folder, wide.name, version)  # the serving loader must accept what we wrote
    return manifest


def data_provenance(path: Path, rows: Sequence[dataset.Row], seed: int, benign: Sequence[Path] = ()) -> dict[str, Any]:
    return {
        "dataset": str(path), "dataset_version": dataset.VERSION, "seed": seed,
        "packages": {n: {"version": v, "licence": packages.LICENCES[n]} for n, v in packages.PACKAGES.items()},
        "sources": dataset.summary(list(rows)), "capture": [str(p) for p in benign] or None,
        "provenance": "screening/DATA.md",
    }


def run(args: Any) -> int:
    path = Path(args.data) if args.data else dataset.load_or_build(args.seed)
    rows = dataset.read(path)
    benign = [Path(p) for p in args.benign or ()]
    for file in benign:  # captured traffic (`capture` policy), all benign, all training
        try:
            captured = capture.read(file)
        except (OSError, ValueError) as exc:
            print(f"{file}: cannot use as benign background: {exc}", file=sys.stderr)
            return 2
        rows += captured.rows
        print(f"{file}: {len(captured.rows)} captured requests as benign background"
              + (f" ({captured.skipped} lines were not records)" if captured.skipped else ""))
    if args.exclude_source:
        rows = [r for r in rows if r.source not in args.exclude_source]
    version = args.version or dt.datetime.now(dt.UTC).strftime("%Y.%m.%d-%H%M")
    fitted = fit(rows, target_fpr=args.target_fpr, progress=not args.quiet,
                 params=json.loads(args.params) if args.params else None)
    folder = Path(args.out) / args.name / version
    manifest = export(fitted, folder, args.name, version, golden_records(rows),
                      data_provenance(path, rows, args.seed, benign), args.signature)
    print(f"{folder}: threshold {manifest.threshold:.4f}, calibration {fitted.calibration}")
    return 0
