"""The model repository: which versions exist (the Source), which serve (the Manager), and swaps.

TensorFlow Serving's roles. The Source is the folder `<root>/<name>/<version>/` (a version is a
folder holding `model.onnx` and `manifest.json`; versions sort naturally, so 2 < 10 and dates in
order). `model.load` is the Loader. This class is the Manager: for each model it holds an
immutable `ModelSet` (its serving versions, each a `Served`: the loaded model and its batcher) and
replaces it by reference, only after every version of the new set loaded and passed its smoke
test. So a failed load or reload changes nothing: what served keeps serving, and the only loaded
version is never dropped for one that does not work. A version that leaves the set is retired:
it takes no new requests, and its batcher closes once the requests holding it (`lease`) are done.

Which versions serve is the model's version policy (`latest` N, `all`, or a list). Loads and
unloads of one model are serialized by a per-model lock; requests never wait on it. A reload keeps
a serving version whose files did not change (same digest) instead of loading it again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from screening.serving import model as loader
from screening.serving.batcher import Batcher, Observer, Result
from screening.serving.errors import LoadFailed, ModelNotFound, ModelNotReady
from screening.serving.model import LoadedModel
from screening.serving.settings import layer, resolve

log = logging.getLogger("portcullis.serving")
READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"


def version_key(version: str) -> list[Any]:
    """Natural order: digit runs compare as numbers ("2" < "10", "2026.11.29-1" < "2026.11.30-1")."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", version)]


def _segment(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


@dataclass(eq=False)
class Served:
    """One serving version: its model, its batcher, and the requests holding it."""

    model: LoadedModel
    batcher: Batcher
    leases: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def infer(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] = ()) -> Result:
        rows = self.model.check(feeds)
        for name in outputs:
            self.model.output(name)
        return await self.batcher.infer(feeds, rows, outputs)


@dataclass(frozen=True, slots=True)
class ModelSet:
    versions: Mapping[str, Served]  # in version order

    @property
    def latest(self) -> Served:
        return self.versions[next(reversed(list(self.versions)))]


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str = ""


class ModelRepository:
    def __init__(
        self, root: Path, defaults: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None, observer: Observer | None = None,
        retire_grace_s: float = 30.0,
    ) -> None:
        self.root = Path(root)
        self.defaults = dict(defaults or {})
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        self.observer = observer
        self.retire_grace_s = retire_grace_s
        self._served: dict[str, ModelSet] = {}
        self._expected: set[str] = set()  # models meant to serve: readiness waits for them
        self._reasons: dict[tuple[str, str], str] = {}  # why a version is not serving
        self._loading: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    # --- the Source: what is on disk --------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _segment(p.name) and self.on_disk(p.name))

    def on_disk(self, name: str) -> list[str]:
        folder = self.root / name
        if not _segment(name) or not folder.is_dir():
            return []
        found = [
            p.name for p in folder.iterdir()
            if _segment(p.name) and (p / loader.MODEL).is_file() and (p / loader.MANIFEST).is_file()
        ]
        return sorted(found, key=version_key)

    def policy(self, name: str, on_disk: Sequence[str]) -> list[str]:
        settings = resolve(layer(self.defaults, "inference defaults"),
                           layer(self.overrides.get(name), f"inference.models.{name}"))
        if settings.versions == "all":
            return list(on_disk)
        if settings.versions == "latest":
            return list(on_disk[-settings.latest_count:])
        return [v for v in on_disk if v in settings.versions]

    # --- requests -----------------------------------------------------------------------------------------
    def resolve(self, name: str, version: str | None = None) -> Served:
        """The version serving `name` (the latest when None); `ModelNotFound` or `ModelNotReady`."""
        served = self._served.get(name)
        if served is None:
            if self.on_disk(name):
                raise ModelNotReady(f"model '{name}' is not ready")
            raise ModelNotFound(f"unknown model '{name}'")
        if not version:
            return served.latest
        found = served.versions.get(version)
        if found is None:
            if version in self.on_disk(name):
                raise ModelNotReady(f"version {version} of model '{name}' is not ready")
            raise ModelNotFound(f"unknown version {version} of model '{name}'")
        return found

    @asynccontextmanager
    async def lease(self, name: str, version: str | None = None) -> AsyncIterator[Served]:
        """Hold one version for a request's duration: a swap does not close it under the request."""
        served = self.resolve(name, version)
        served.leases += 1
        served.idle.clear()
        try:
            yield served
        finally:
            served.leases -= 1
            if served.leases == 0:
                served.idle.set()

    def is_serving(self, name: str) -> bool:
        return name in self._served

    def serving(self) -> list[Served]:
        """Every version serving now."""
        return [served for model_set in list(self._served.values()) for served in model_set.versions.values()]

    def ready_versions(self, name: str) -> list[str]:
        served = self._served.get(name)
        return list(served.versions) if served is not None else []

    def ready(self) -> bool:
        """Every model meant to serve has a serving version (Triton's strict readiness)."""
        return all(name in self._served for name in self._expected)

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        out: list[IndexEntry] = []
        for name in sorted(set(self.names()) | set(self._served)):
            served = self._served.get(name)
            versions = sorted(set(self.on_disk(name)) | set(served.versions if served else ()), key=version_key)
            for version in versions:
                if served is not None and version in served.versions:
                    out.append(IndexEntry(name, version, READY))
                elif not ready_only:
                    state = LOADING if name in self._loading else UNAVAILABLE
                    out.append(IndexEntry(name, version, state, self._reasons.get((name, version), "unloaded")))
        return out

    # --- the Manager: load, unload, swap ----------------------------------------------------------------
    async def start(self, names: Iterable[str] | None = None) -> None:
        """Load the given models (all on disk when None); failures are logged and leave the server unready."""
        for name in list(names) if names is not None else self.names():
            try:
                await self.load(name)
            except (LoadFailed, ModelNotFound) as exc:
                self._expected.add(name)
                log.error("model %s not served: %s", name, exc.message)

    async def load(self, name: str) -> ModelSet:
        """Load (or reload) `name` by its version policy; the new set replaces the old only when all loaded."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            on_disk = self.on_disk(name)
            if not on_disk:
                if not _segment(name) or not (self.root / name).is_dir():
                    raise ModelNotFound(f"unknown model '{name}'")
                raise LoadFailed(f"model '{name}' has no versions in the repository")
            wanted = self.policy(name, on_disk)
            if not wanted:
                raise LoadFailed(f"no version of model '{name}' matches its version policy")
            current = self._served.get(name)
            self._loading.add(name)
            try:
                fresh = await asyncio.to_thread(self._load_versions, name, wanted, current)
            finally:
                self._loading.discard(name)
            versions = {v: current.versions[v] if current and v in current.versions and v not in fresh
                        else fresh[v] for v in wanted}
            for served in fresh.values():
                served.batcher.start()
            self._served[name] = new = ModelSet(versions)  # the swap: requests from now on see the new set
            self._expected.add(name)
            for version in wanted:
                self._reasons.pop((name, version), None)
            if current is not None:
                await self._retire([s for v, s in current.versions.items() if versions.get(v) is not s])
            log.info("model %s serving versions %s", name, ", ".join(wanted))
            return new

    def _load_versions(self, name: str, wanted: Sequence[str], current: ModelSet | None) -> dict[str, Served]:
        """In a thread: every wanted version not already serving unchanged; all or nothing."""
        fresh: dict[str, Served] = {}
        override = self.overrides.get(name)
        for version in wanted:
            folder = self.root / name / version
            serving = current.versions.get(version) if current else None
            if serving is not None and serving.model.digest == loader.disk_digest(folder):
                continue
            try:
                model = loader.load(folder, name, version, self.defaults, override)
            except LoadFailed as exc:
                self._reasons[(name, version)] = exc.message
                raise
            fresh[version] = Served(model, Batcher(model, self.observer))
        return fresh

    async def unload(self, name: str) -> None:
        """Stop serving `name`: new requests are refused at once, those holding a version finish."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            current = self._served.pop(name, None)
            if current is None and not self.on_disk(name) and not (self.root / name).is_dir():
                raise ModelNotFound(f"unknown model '{name}'")
            self._expected.discard(name)
            if current is not None:
                await self._retire(list(current.versions.values()))
                log.info("model %s unloaded", name)

    async def _retire(self, versions: Sequence[Served]) -> None:
        for served in versions:
            if served.leases:
                try:
                    await asyncio.wait_for(served.idle.wait(), self.retire_grace_s)
                except TimeoutError:
                    log.warning("model %s retired with %d requests still holding it", served.model.key, served.leases)
            await served.batcher.close()

    async def close(self) -> None:
        served, self._served = self._served, {}
        for model_set in served.values():
            for version in model_set.versions.values():
                await version.batcher.close()

