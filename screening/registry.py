"""The model registry on disk and the loader that refuses anything it cannot vouch for.

Layout: `<root>/<name>/<version>/{model.onnx, manifest.json}`; versions sort by name, so date-based
versions (`2026.11.29-1`) sort in time order. `load` is the Loader role of TensorFlow Serving: read
the manifest, check the model file's sha256 and the feature schema, open an onnxruntime session,
run the golden inputs and compare their scores; any failure raises `ModelRefused` with the reason,
and nothing is swapped. A `LoadedModel` is an immutable value: a request holds the one it started
with. Serving needs numpy and onnxruntime only; onnxruntime is imported by the first load, not by
this module, so a gateway that screens nothing never maps it (~30 MiB of a worker's RSS).

A model takes one of two input signatures (`Manifest.signature`): wide, the [N, F] feature vectors,
or narrow, the 116 dense columns and the sums of its two n-gram weight tables over the request's
n-grams (`export.to_narrow_model`). Both are fed from the same feature vectors (`run`), so callers
do not change and a wide model stays loadable for rollback; the loader checks that the graph's
inputs are the manifest's.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from screening import features
from screening.features import DENSE_COLUMNS, NGRAMS
from screening.manifest import MANIFEST, MODEL, Manifest, file_sha256
from screening.onnx_runtime import ort_errors, session_options
from screening.record import RequestRecord
from screening.top_features import TopFeatures

if TYPE_CHECKING:
    import onnxruntime as ort

OUTPUTS = ("score", "attack_probability", "anomaly")
_OUTPUT_NAMES = list(OUTPUTS)
_dot = np.dot
_FLOAT32 = np.dtype(np.float32)
SIGNATURES = {"wide": ("X",), "narrow": ("dense", "gram_logit", "gram_rare")}
N_DENSE = len(DENSE_COLUMNS)
GOLDEN_TOLERANCE = 1e-4


class ModelRefused(Exception):
    """A model that failed a check; `reason` says which, in words an operator can act on."""

    def __init__(self, name: str, version: str, reason: str) -> None:
        super().__init__(f"model {name}/{version} refused: {reason}")
        self.name, self.version, self.reason = name, version, reason


class ScoringError(Exception):
    """Inference failed (onnxruntime's errors are translated to this where they enter)."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    manifest: Manifest
    session: ort.InferenceSession
    weights: np.ndarray
    baseline: np.ndarray
    path: Path
    key: str = field(init=False)
    narrow: bool = field(init=False)
    # Narrow: per feature, its classifier weight and its rare weight ([2, F] float32, zero off the n-gram
    # columns): this times a vector is the two n-gram sums, each present n-gram counted once.
    gram_table: np.ndarray = field(init=False, repr=False)
    _bindings: threading.local = field(init=False, repr=False)  # per thread: see `_run_one`
    explainer: TopFeatures = field(init=False, repr=False)
    _one_row: tuple[int, int] = field(init=False, repr=False)  # the shape `run` binds: (1, n_features)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.manifest.name}/{self.manifest.version}")
        object.__setattr__(self, "narrow", self.manifest.signature == "narrow")
        table = np.zeros((2, features.N_FEATURES), dtype=np.float32)
        if self.narrow:
            table[0, NGRAMS] = self.manifest.grams["logit"]
            table[1, NGRAMS] = self.manifest.grams["rare"]
        object.__setattr__(self, "gram_table", table)
        object.__setattr__(self, "_bindings", threading.local())
        object.__setattr__(self, "explainer", TopFeatures(self.weights, self.baseline))
        object.__setattr__(self, "_one_row", (1, self.manifest.n_features))

    def top_features(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """What `features.top_contributions(vector, weights, k, None, baseline)` returns (the `k`
        largest positive contributions, unresolved names) for a row `features.combine` made; see
        `screening.top_features`."""
        return self.explainer.of(vector, k)

    def run(self, X: np.ndarray) -> np.ndarray:
        """Scores of a [N, F] batch as [N, 3]: score, attack probability, anomaly."""
        try:
            # One float32 row of the model's width: `==` against the type np.float32 would make a dtype per
            # call; numpy's float32 dtype is one object (any other spelling takes the general path).
            if X.dtype is _FLOAT32 and X.shape == self._one_row:
                return self._run_narrow_one(X) if self.narrow else self._run_one(X)
            feeds = self.narrow_feeds(X) if self.narrow else {"X": X}
            outputs = self.session.run(_OUTPUT_NAMES, feeds)
        except ort_errors() as exc:
            raise ScoringError(f"{self.key}: inference failed: {type(exc).__name__}: {exc}") from None
        return np.concatenate(outputs, axis=1)

    def narrow_feeds(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """A narrow graph's inputs for [N, F] vectors: the dense columns, and the two n-gram sums (every
        n-gram column is 0 or 1: `gram_table` times the vector, row by row as `_run_narrow_one` does)."""
        X = np.asarray(X, dtype=np.float32)
        sums = np.zeros((len(X), 2), dtype=np.float32)
        for i, row in enumerate(X):
            _dot(self.gram_table, row, out=sums[i])
        return {"dense": X[:, DENSE_COLUMNS], "gram_logit": sums[:, :1], "gram_rare": sums[:, 1:]}

    def _run_one(self, X: np.ndarray) -> np.ndarray:
        """One row (what the gateway scores per request) through an I/O binding made once per thread:
        the row is copied into a bound input buffer and the three outputs land side by side in a bound
        [1, 3] buffer, so no input dict, no output arrays and no concatenation per run. The same
        session and graph: the same floats as `session.run`."""
        bound = getattr(self._bindings, "bound", None)
        if bound is None:
            bound = self._bindings.bound = _bind_one(self.session, X.shape[1])
        run, binding, options, row, scores = bound
        row[...] = X
        run(binding, options)
        return scores.copy()

    def _run_narrow_one(self, X: np.ndarray) -> np.ndarray:
        """`_run_one` for a narrow graph: the dense columns (one `take` into the buffer) and the two
        n-gram sums (one float32 matrix-vector product with `gram_table`) are written into one bound
        [1, 118] buffer whose parts are the three inputs. Fed from the vector: gathering a request's
        n-gram positions and dropping repeats costs more in numpy calls than this product over the
        4,007 columns (docs/screening.md, optimisation notes)."""
        bound = getattr(self._bindings, "narrow", None)
        if bound is None:
            bound = self._bindings.narrow = _bind_narrow(self.session)
        run, binding, options, dense, sums, scores = bound
        row = X[0]
        row.take(DENSE_COLUMNS, 0, dense, "clip")  # positional, into `dense`: no temporary, no keywords
        self.gram_table.dot(row, sums)  # what `np.dot(table, row, out=sums)` computes, minus its dispatch
        run(binding, options)
        return scores.copy()

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"name": m.name, "version": m.version, "feature_schema": m.feature_schema, "sha256": m.sha256,
                "threshold": m.threshold, "created": m.created, "metrics": m.metrics.get("summary", {})}


def _bind_one(session: ort.InferenceSession, width: int) -> tuple[Any, Any, Any, np.ndarray, np.ndarray]:
    """An I/O binding of `session` for one row: input buffer [1, width], outputs into one [1, 3] buffer."""
    row = np.zeros((1, width), dtype=np.float32)
    scores = np.zeros((1, len(OUTPUTS)), dtype=np.float32)
    binding = session.io_binding()
    binding.bind_input("X", "cpu", 0, np.float32, [1, width], row.ctypes.data)
    _bind_outputs(binding, scores)
    return (*_runner(session, binding), row, scores)


def _bind_narrow(
    session: ort.InferenceSession, native: bool = True
) -> tuple[Any, Any, Any, np.ndarray, np.ndarray, np.ndarray]:
    """A narrow graph's binding for one row: `dense`, `gram_logit`, `gram_rare` side by side in one
    buffer; returned as views: the dense row ([116], what `take` writes), the two sums, and the scores."""
    buffer = np.zeros((1, N_DENSE + 2), dtype=np.float32)
    scores = np.zeros((1, len(OUTPUTS)), dtype=np.float32)
    binding = session.io_binding()
    size = buffer.itemsize
    binding.bind_input("dense", "cpu", 0, np.float32, [1, N_DENSE], buffer.ctypes.data)
    binding.bind_input("gram_logit", "cpu", 0, np.float32, [1, 1], buffer.ctypes.data + N_DENSE * size)
    binding.bind_input("gram_rare", "cpu", 0, np.float32, [1, 1], buffer.ctypes.data + (N_DENSE + 1) * size)
    _bind_outputs(binding, scores)
    return (*_runner(session, binding, native), buffer[0, :N_DENSE], buffer[0, N_DENSE:], scores)


def _bind_outputs(binding: Any, scores: np.ndarray) -> None:
    for i, name in enumerate(OUTPUTS):
        binding.bind_output(name, "cpu", 0, np.float32, [1, 1], scores.ctypes.data + i * scores.itemsize)


def _runner(session: ort.InferenceSession, binding: Any, native: bool = True) -> tuple[Any, Any, Any]:
    """How to run a binding: `(run, binding, options)`, called as `run(binding, options)`.

    The session's C-level `run_with_iobinding` with the binding's C object and one `RunOptions` made
    here, when the installed onnxruntime has them: the public method adds a WebGPU graph-capture check
    (a CPU session never captures), and a None for the options costs pybind11 a failed attribute
    lookup (an AttributeError raised and cleared) per run. Else (or `native=False`) the public method,
    without options (passing options to it reads a config entry that raises per run). Same run, same
    floats."""
    import onnxruntime as ort

    inner, inner_binding = getattr(session, "_sess", None), getattr(binding, "_iobinding", None)
    if native and inner is not None and inner_binding is not None and hasattr(inner, "run_with_iobinding"):
        return inner.run_with_iobinding, inner_binding, ort.RunOptions()
    return _public_run(session), binding, None


def _public_run(session: ort.InferenceSession) -> Any:
    def run(binding: Any, options: Any) -> None:
        session.run_with_iobinding(binding)

    return run


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[str]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / MANIFEST).is_file())

    def latest(self, name: str) -> str | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def folder(self, name: str, version: str) -> Path:
        if "/" in name or "/" in version or name.startswith(".") or version.startswith("."):
            raise ModelRefused(name, version, "names and versions are single path segments")
        return self.root / name / version

    def manifest(self, name: str, version: str) -> Manifest:
        return Manifest.read(self.folder(name, version))

    def load(self, name: str, version: str | None = None) -> LoadedModel:
        """Load and verify one version (the latest when None); raises `ModelRefused`."""
        version = version or self.latest(name)
        if version is None:
            raise ModelRefused(name, "-", f"no versions under {self.root / name}")
        return load_folder(self.folder(name, version), name, version)


def load_folder(folder: Path, name: str = "", version: str = "") -> LoadedModel:
    name, version = name or folder.parent.name, version or folder.name
    try:
        manifest = Manifest.read(folder)
    except (OSError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ModelRefused(name, version, f"unreadable manifest: {exc}") from None
    if manifest.feature_schema != features.SCHEMA or manifest.n_features != features.N_FEATURES:
        raise ModelRefused(name, version, f"feature schema {manifest.feature_schema} is not this gateway's "
                                          f"{features.SCHEMA}")
    model_path = folder / MODEL
    try:
        digest = file_sha256(model_path)
    except OSError as exc:
        raise ModelRefused(name, version, f"unreadable model file: {exc.strerror}") from None
    if digest != manifest.sha256:
        raise ModelRefused(name, version, f"checksum mismatch: file {digest[:12]}, manifest {manifest.sha256[:12]}")
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(model_path), session_options(), providers=["CPUExecutionProvider"])
    except ort_errors() as exc:
        raise ModelRefused(name, version, f"onnxruntime cannot load it: {type(exc).__name__}") from None
    expected = SIGNATURES.get(manifest.signature)
    inputs = tuple(i.name for i in session.get_inputs())
    if expected is None or inputs != expected:
        raise ModelRefused(name, version, f"the manifest's signature {manifest.signature!r} does not match the "
                                          f"graph's inputs {', '.join(inputs)}")
    if manifest.signature == "narrow" and any(
        len(manifest.grams.get(table, ())) != NGRAMS.stop - NGRAMS.start for table in ("logit", "rare")
    ):
        raise ModelRefused(name, version, "the n-gram weight tables do not match the feature width")
    weights = np.asarray(manifest.weights, dtype=np.float32)
    baseline = np.asarray(manifest.baseline, dtype=np.float32)
    if len(weights) not in (0, features.N_FEATURES) or len(baseline) not in (0, len(weights)):
        raise ModelRefused(name, version, "explanation weights do not match the feature width")
    model = LoadedModel(manifest, session, weights, baseline if len(baseline) else np.zeros_like(weights), folder)
    smoke_test(model)
    return model


def smoke_test(model: LoadedModel) -> None:
    """Golden inputs must score as they did at export; a model without them is refused."""
    golden = model.manifest.golden
    name, version = model.manifest.name, model.manifest.version
    if not golden:
        raise ModelRefused(name, version, "the manifest has no golden inputs to smoke-test with")
    X = features.extract_many([RequestRecord.from_json(g.record) for g in golden])
    try:
        got = model.run(X)[:, 0]
    except ScoringError as exc:
        raise ModelRefused(name, version, f"smoke test failed to run: {exc}") from None
    expected = np.asarray([g.score for g in golden])
    worst = float(np.max(np.abs(got - expected)))
    if not np.isfinite(worst) or worst > GOLDEN_TOLERANCE:
        raise ModelRefused(name, version, f"smoke test: golden scores differ by {worst:.2e}")
