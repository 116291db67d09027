"""The Loader: one model version from its folder, verified, as an immutable `LoadedModel`.

Layout: `<root>/<name>/<version>/{model.onnx, manifest.json}`, the registry's. `load` reads the
manifest (its `sha256` is checked when it gives one), opens one onnxruntime session, reads the
signature from the ONNX graph (each input and output: protocol datatype and shape, -1 for a
variable dimension), resolves the serving settings (operator defaults, the manifest's `serving`
block, the operator's per-model settings) and smoke-tests the session: the manifest's golden
tensors (`serving.golden`, protocol JSON tensors) must come out within `golden_tolerance`; a model
without golden tensors must at least run on a zero input of its signature. Any failure raises
`LoadFailed` with a reason an operator can act on, and nothing is swapped.

A `LoadedModel` is a value: requests hold the one they resolved. `check` validates a request's
tensors against the signature; `run` is one onnxruntime run (it releases the GIL; one session serves
concurrent runs), with onnxruntime's errors translated here, where they enter.

onnxruntime is imported by the first `load`, not by this module (`screening.onnx_runtime`: the
gateway imports the serving library whether or not it serves a model).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from screening.manifest import file_sha256
from screening.onnx_runtime import ort_errors, ort_invalid_input, session_options
from screening.serving import datatypes
from screening.serving.errors import InferenceFailed, InvalidInput, LoadFailed
from screening.serving.settings import ServingSettings, layer, resolve

if TYPE_CHECKING:
    import onnxruntime as ort

MODEL = "model.onnx"
MANIFEST = "manifest.json"
PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 where the size varies; the batch dimension included

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, eq=False)
class LoadedModel:
    name: str
    version: str
    path: Path
    session: ort.InferenceSession
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    settings: ServingSettings
    digest: str  # model file and manifest: a reload keeps a version whose digest did not change
    manifest: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def output(self, name: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise InvalidInput(f"model '{self.name}' has no output '{name}'")

    def check(self, given: Mapping[str, np.ndarray]) -> int:
        """Validate a request's tensors against the signature; the batch rows (1 for a non-batching model)."""
        unknown = [n for n in given if n not in {s.name for s in self.inputs}]
        if unknown:
            raise InvalidInput(f"model '{self.name}' has no input '{unknown[0]}'")
        rows = -1
        for spec in self.inputs:
            array = given.get(spec.name)
            if array is None:
                raise InvalidInput(f"input '{spec.name}' of model '{self.name}' is missing")
            expected = datatypes.DATATYPES[spec.datatype]
            if array.dtype != expected.dtype:
                raise InvalidInput(f"input '{spec.name}': expected datatype {spec.datatype}")
            if len(array.shape) != len(spec.shape) or any(
                want != -1 and got != want for got, want in zip(array.shape, spec.shape)
            ):
                raise InvalidInput(
                    f"input '{spec.name}': shape {list(array.shape)} does not match the model's {list(spec.shape)}"
                )
            if self.settings.max_batch_size > 0:
                if rows == -1:
                    rows = array.shape[0]
                elif array.shape[0] != rows:
                    raise InvalidInput("inputs have different batch sizes")
        if self.settings.max_batch_size == 0:
            return 1
        if not 1 <= rows <= self.settings.max_batch_size:
            raise InvalidInput(
                f"batch size {rows} of model '{self.name}' is not within 1..{self.settings.max_batch_size}"
            )
        return rows

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs else list(self.output_names)
        try:
            values = self.session.run(names, dict(feeds))
        except ort_invalid_input() as exc:
            raise InvalidInput(f"{self.key}: onnxruntime refused the input: {exc}") from None
        except ort_errors() as exc:
            raise InferenceFailed(f"{self.key}: inference failed: {type(exc).__name__}") from None
        return dict(zip(names, values))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "platform": PLATFORM,
            "inputs": [s.describe() for s in self.inputs], "outputs": [s.describe() for s in self.outputs],
        }


def _signature(args: Sequence[Any], what: str, name: str, version: str) -> tuple[TensorSpec, ...]:
    specs = []
    for arg in args:
        dt = datatypes.BY_ONNX.get(arg.type)
        if dt is None:
            raise LoadFailed(f"model {name}/{version}: {what} '{arg.name}' has type {arg.type}, not served")
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
        specs.append(TensorSpec(arg.name, dt.name, shape))
    return tuple(specs)


def version_digest(model_sha256: str, manifest: Mapping[str, Any]) -> str:
    """Identity of a version's files: the model's sha256 and the manifest's content."""
    return f"{model_sha256}:{hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()}"


def disk_digest(folder: Path) -> str:
    """The digest `load` would give the version's files now (empty when they are unreadable)."""
    try:
        return version_digest(file_sha256(folder / MODEL), read_manifest(folder))
    except (OSError, ValueError, TypeError):
        return ""


def read_manifest(folder: Path) -> dict[str, Any]:
    doc = json.loads((folder / MANIFEST).read_text())
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    return doc


def load(
    folder: Path, name: str, version: str,
    defaults: Mapping[str, Any] | None = None, override: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Load and verify one version; `LoadFailed` (with the reason) when anything is wrong."""
    where = f"model {name}/{version}"
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError, TypeError) as exc:
        raise LoadFailed(f"{where}: unreadable manifest: {exc}") from None
    serving = dict(manifest.get("serving") or {})
    golden = serving.pop("golden", [])
    try:
        settings = resolve(
            layer(defaults, "inference defaults"), layer(serving, f"{where} manifest"),
            layer(override, f"inference.models.{name}"),
        )
        model_digest = file_sha256(folder / MODEL)
    except ValueError as exc:
        raise LoadFailed(str(exc)) from None
    except OSError as exc:
        raise LoadFailed(f"{where}: unreadable model file: {exc.strerror}") from None
    expected = manifest.get("sha256")
    if expected and expected != model_digest:
        raise LoadFailed(f"{where}: checksum mismatch: file {model_digest[:12]}, manifest {str(expected)[:12]}")
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(
            str(folder / MODEL), session_options(settings.intra_op_threads), providers=["CPUExecutionProvider"]
        )
    except ort_errors() as exc:
        raise LoadFailed(f"{where}: onnxruntime cannot load it: {type(exc).__name__}") from None
    inputs = _signature(session.get_inputs(), "input", name, version)
    outputs = _signature(session.get_outputs(), "output", name, version)
    if settings.max_batch_size > 0:
        fixed = [s.name for s in (*inputs, *outputs) if not s.shape or s.shape[0] != -1]
        if fixed:
            raise LoadFailed(f"{where}: max_batch_size > 0, but '{fixed[0]}' has no variable first dimension")
    model = LoadedModel(name, version, folder, session, inputs, outputs, settings,
                        version_digest(model_digest, manifest), manifest)
    smoke_test(model, golden)
    return model


def smoke_test(model: LoadedModel, golden: Sequence[Mapping[str, Any]]) -> None:
    """The golden tensors reproduce, or without them a zero input of the signature runs."""
    where = f"model {model.key}"
    if not golden:
        feeds = {}
        for spec in model.inputs:
            shape = tuple(1 if d == -1 else d for d in spec.shape)
            dt = datatypes.DATATYPES[spec.datatype]
            feeds[spec.name] = np.full(shape, "", dtype=object) if not dt.fixed_size else np.zeros(shape, dt.dtype)
        try:
            model.run(feeds)
        except (InvalidInput, InferenceFailed) as exc:
            raise LoadFailed(f"{where}: smoke test failed to run: {exc.message}") from None
        return
    for n, case in enumerate(golden):
        try:
            feeds = {t["name"]: _tensor(t) for t in case["inputs"]}
            wanted = {t["name"]: _tensor(t) for t in case["outputs"]}
            got = model.run(feeds, list(wanted))
        except (KeyError, TypeError) as exc:
            raise LoadFailed(f"{where}: golden case {n} is malformed: {exc}") from None
        except (InvalidInput, InferenceFailed) as exc:
            raise LoadFailed(f"{where}: golden case {n} failed to run: {exc.message}") from None
        for out, expected in wanted.items():
            value = got[out]
            if value.shape != expected.shape:
                raise LoadFailed(f"{where}: golden case {n}: output '{out}' has shape {list(value.shape)}")
            if expected.dtype.kind in "fc":
                worst = float(np.max(np.abs(value.astype(np.float64) - expected), initial=0.0))
                if not np.isfinite(worst) or worst > model.settings.golden_tolerance:
                    raise LoadFailed(f"{where}: golden case {n}: output '{out}' differs by {worst:.2e}")
            elif not np.array_equal(value, expected):
                raise LoadFailed(f"{where}: golden case {n}: output '{out}' differs")


def _tensor(doc: Mapping[str, Any]) -> np.ndarray:
    name = str(doc["name"])
    dt = datatypes.datatype(doc["datatype"], name)
    return datatypes.from_values(dt, datatypes.check_shape(doc["shape"], name), doc["data"], name)
