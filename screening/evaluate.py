"""Evaluation: detection per attack family, false positives, ROC and precision-recall, generalisation.

`evaluate(model_folder, data)` scores the held-out test split with the exported model through the
serving path (onnxruntime, `screening.registry`), never scikit-learn, so what is measured is what
runs. It reports, at the manifest's threshold and at fixed false-positive rates: detection per
family and per source, false-positive rate per benign source, ROC-AUC and average precision, and
writes a markdown report with PNG plots (ROC curve, score distributions).

`generalisation(data)` trains fresh models (scikit-learn, no export) leaving one attack source or
one attack family out of training, and measures detection on everything that source or family has,
at the threshold calibrated without it: the honest number, since a random split of one payload
list is nearly perfect for any model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from screening import dataset, features
from screening.registry import load_folder

FPR_POINTS = (0.001, 0.005, 0.01)


def roc(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    order = np.argsort(-scores, kind="stable")
    y_sorted = y[order]
    tps = np.concatenate([[0], np.cumsum(y_sorted)])
    fps = np.concatenate([[0], np.cumsum(1 - y_sorted)])
    tpr = tps / max(tps[-1], 1)
    fpr = fps / max(fps[-1], 1)
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = y[order]
    if hits.sum() == 0:
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def threshold_for_fpr(benign: np.ndarray, fpr: float) -> float:
    from screening.train import threshold_at

    return threshold_at(benign, fpr)


def metrics(rows: Sequence[dataset.Row], scores: np.ndarray, threshold: float) -> dict[str, Any]:
    y = np.asarray([r.label for r in rows])
    benign = scores[y == 0]
    flagged = scores >= threshold
    out: dict[str, Any] = {
        "rows": len(rows), "attacks": int(y.sum()), "benign": int((y == 0).sum()), "threshold": threshold,
        "detection": round(float(flagged[y == 1].mean()), 4) if y.any() else None,
        "fpr": round(float(flagged[y == 0].mean()), 5) if (y == 0).any() else None,
    }
    if y.any() and (y == 0).any():
        _, _, auc = roc(y, scores)
        out["roc_auc"] = round(auc, 5)
        out["average_precision"] = round(average_precision(y, scores), 5)
        out["at_fpr"] = {}
        for point in FPR_POINTS:
            t = threshold_for_fpr(benign, point)
            out["at_fpr"][f"{point:.1%}"] = {"threshold": round(t, 5),
                                             "detection": round(float((scores[y == 1] >= t).mean()), 4)}
    by_family: dict[str, dict[str, Any]] = {}
    for key in sorted({(r.label, r.family) for r in rows}):
        mask = np.asarray([(r.label, r.family) == key for r in rows])
        rate = float(flagged[mask].mean())
        name = key[1] if key[0] == 1 else f"benign:{key[1]}"
        by_family[name] = {"n": int(mask.sum()), ("detection" if key[0] == 1 else "fpr"): round(rate, 4)}
    out["by_family"] = by_family
    by_source: dict[str, dict[str, Any]] = {}
    for source in sorted({r.source for r in rows}):
        mask = np.asarray([r.source == source for r in rows])
        label = rows[int(np.flatnonzero(mask)[0])].label
        by_source[source] = {"n": int(mask.sum()),
                             ("detection" if label == 1 else "fpr"): round(float(flagged[mask].mean()), 4)}
    out["by_source"] = by_source
    return out


def score_rows(folder: Path, rows: Sequence[dataset.Row], batch: int = 2048) -> tuple[np.ndarray, Any]:
    model = load_folder(folder)
    scores = np.zeros(len(rows), dtype=np.float64)
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        scores[start : start + len(chunk)] = model.run(features.extract_many([r.record for r in chunk]))[:, 0]
    return scores, model


def plots(rows: Sequence[dataset.Row], scores: np.ndarray, threshold: float, out: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray([r.label for r in rows])
    out.mkdir(parents=True, exist_ok=True)
    fpr, tpr, auc = roc(y, scores)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(fpr, tpr, label=f"ROC (AUC {auc:.4f})")
    ax.axvline(0.005, color="grey", linestyle=":", label="FPR 0.5%")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_xlabel("false-positive rate (log)")
    ax.set_ylabel("detection rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    roc_path = out / "roc.png"
    fig.tight_layout()
    fig.savefig(roc_path, dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    bins = [i / 50 for i in range(51)]
    ax.hist(scores[y == 0], bins=bins, alpha=0.6, label="benign", log=True)
    ax.hist(scores[y == 1], bins=bins, alpha=0.6, label="attack", log=True)
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("score")
    ax.set_ylabel("requests (log)")
    ax.set_title("score distributions")
    ax.legend()
    dist_path = out / "scores.png"
    fig.tight_layout()
    fig.savefig(dist_path, dpi=110)
    plt.close(fig)
    return [roc_path, dist_path]


def generalisation(rows: Sequence[dataset.Row], by: str, target_fpr: float = 0.005,
                   progress: bool = False, params: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Leave one attack `source` or `family` out of training; detection on all of it, FPR on benign test."""
    from screening.train import featurize, fit

    attacks = [r for r in rows if r.label == 1]
    groups = sorted({getattr(r, by) for r in attacks})
    benign_test = [r for r in rows if r.label == 0 and r.split == "test"]
    Xb = featurize(benign_test, progress, "benign test")
    cache: dict[int, np.ndarray] = {}
    results = {}
    for group in groups:
        kept = [r for r in rows if not (r.label == 1 and getattr(r, by) == group)]
        held = [r for r in attacks if getattr(r, by) == group]
        fitted = fit(kept, target_fpr=target_fpr, progress=progress, params=params)
        Xh = featurize(held, progress, f"held out {group}")
        held_scores = fitted.model.score(Xh)
        benign_scores = cache.setdefault(id(fitted), fitted.model.score(Xb))
        at_half_percent = threshold_for_fpr(benign_scores, 0.005)
        results[group] = {
            "n": len(held),
            "detection": round(float((held_scores >= fitted.threshold).mean()), 4),
            "benign_fpr": round(float((benign_scores >= fitted.threshold).mean()), 5),
            "detection_at_fpr_0.5%": round(float((held_scores >= at_half_percent).mean()), 4),
        }
    return results


def report(summary: dict[str, Any], generalised: dict[str, dict[str, dict[str, Any]]], images: list[Path],
           model_key: str, data_path: Path, relative_to: Path) -> str:
    lines = [f"## Held-out test split: model `{model_key}`", "",
             f"Data: `{data_path}` (test split, never seen in training or calibration).", ""]
    lines += [f"- requests: {summary['rows']} ({summary['attacks']} attacks, {summary['benign']} benign)",
              f"- threshold (from the manifest): {summary['threshold']:.4f}",
              f"- **detection {summary['detection']:.2%} at false-positive rate {summary['fpr']:.3%}**",
              f"- ROC-AUC {summary.get('roc_auc', 0):.5f}, average precision {summary.get('average_precision', 0):.5f}",
              ""]
    lines += ["| at FPR | threshold | detection |", "| --- | --- | --- |"]
    for point, value in summary.get("at_fpr", {}).items():
        lines.append(f"| {point} | {value['threshold']:.4f} | {value['detection']:.2%} |")
    lines += ["", "| family | n | detection / FPR |", "| --- | --- | --- |"]
    for family, value in summary["by_family"].items():
        rate = value.get("detection", value.get("fpr"))
        lines.append(f"| {family} | {value['n']} | {rate:.2%} |")
    lines += ["", "| source | n | detection / FPR |", "| --- | --- | --- |"]
    for source, value in summary["by_source"].items():
        rate = value.get("detection", value.get("fpr"))
        lines.append(f"| {source} | {value['n']} | {rate:.2%} |")
    for by, results in generalised.items():
        lines += ["", f"## Leave one {by} out", "",
                  (f"Each row: a model trained without that {by}, calibrated to 0.5% FPR on its own calibration "
                   "rows; detection on every request of the held-out group."), "",
                  f"| held-out {by} | n | detection at calibrated threshold | benign FPR | detection at FPR 0.5% |",
                  "| --- | --- | --- | --- | --- |"]
        for group, value in results.items():
            lines.append(f"| {group} | {value['n']} | {value['detection']:.2%} | {value['benign_fpr']:.3%} | "
                         f"{value['detection_at_fpr_0.5%']:.2%} |")
        mean = np.mean([v["detection_at_fpr_0.5%"] for v in results.values()]) if results else 0.0
        weighted = (sum(v["detection_at_fpr_0.5%"] * v["n"] for v in results.values())
                    / max(sum(v["n"] for v in results.values()), 1))
        lines += ["", f"Mean detection at FPR 0.5%: {mean:.2%} (weighted by requests: {weighted:.2%})."]
    lines += [""] + [f"![{p.stem}]({p.relative_to(relative_to) if p.is_relative_to(relative_to) else p})"
                     for p in images]
    return "\n".join(lines) + "\n"


def run(args: Any) -> int:
    data = Path(args.data) if args.data else dataset.load_or_build(args.seed)
    rows = dataset.read(data)
    test = [r for r in rows if r.split == "test"]
    folder = Path(args.model)
    scores, model = score_rows(folder, test)
    summary = metrics(test, scores, model.manifest.threshold)
    out = Path(args.out)
    images = plots(test, scores, model.manifest.threshold, out, f"{model.key}: held-out test")
    generalised: dict[str, dict[str, dict[str, Any]]] = {}
    for by in args.leave_out or ():
        generalised[by] = generalisation(rows, by, progress=not args.quiet)
    text = report(summary, generalised, images, model.key, data, out.parent)
    (out / "report.md").write_text(text)
    results = {"test": summary, "leave_out": generalised}
    (out / "metrics.json").write_text(json.dumps(results, indent=1))
    if args.write_manifest:
        record_metrics(folder, results)
    print(text)
    return 0


def record_metrics(folder: Path, results: dict[str, Any]) -> None:
    """Write evaluation results into the model's manifest (the model file and its checksum do not change)."""
    import dataclasses

    from screening.manifest import Manifest

    manifest = Manifest.read(folder)
    test = results["test"]
    summary: dict[str, Any] = {key: test.get(key) for key in ("detection", "fpr", "roc_auc", "average_precision")}
    for by, groups in results.get("leave_out", {}).items():
        rates = [g["detection_at_fpr_0.5%"] for g in groups.values()]
        summary[f"leave_one_{by}_out_mean_detection_at_fpr_0.5%"] = round(sum(rates) / len(rates), 4) if rates else None
    metrics = {**manifest.metrics, "test": test, "leave_out": results.get("leave_out", {}), "summary": summary}
    dataclasses.replace(manifest, metrics=metrics).write(folder)
