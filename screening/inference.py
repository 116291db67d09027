"""`Scorer`: the one owner of the ONNX sessions a gateway scores with, and of their swapping.

Roles (TensorFlow Serving's): `registry.load` is the Loader; the `Scorer` is the Manager. It holds
the active model, the previous one (for rollback; the last good model is never dropped) and an
optional shadow candidate, and swaps them by reference only after a load fully succeeded. A request
reads `scorer.active` once and scores with that model for its whole duration.

Inference is bounded and batched. `mode="batch"`: requests queue their feature rows;
the first one to arrive schedules a flush on the next loop iteration, so every request that arrived
meanwhile goes in the same `session.run`; while `workers` batches are running in the executor
(onnxruntime releases the GIL), later rows wait and form the next, larger batch. `mode="inline"`
runs each request's rows on the event loop: with the shipped model a run costs about 11 us, less
than the hand-off to a thread, so the gateway defaults to it (measurements in `docs/screening.md`);
`batch` is for heavier models. The queue is bounded (`max_pending`):
beyond it, scoring fails fast and the policy applies its `fail_open` setting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

import numpy as np

from screening.registry import LoadedModel, ScoringError


class Observer(Protocol):
    """What the Scorer reports (the gateway turns it into metrics)."""

    def batch(self, size: int, seconds: float) -> None: ...


class _Silent:
    def batch(self, size: int, seconds: float) -> None:
        return None


class Scores(NamedTuple):
    """Scores of one request's rows, by the model that made them, and the shadow's if one ran.

    (A named tuple: one is made per request, and a tuple is the cheapest immutable value.)"""

    model: LoadedModel
    values: np.ndarray  # [rows, 3]: score, attack probability, anomaly
    shadow: LoadedModel | None = None
    shadow_values: np.ndarray | None = None


@dataclass(slots=True)
class _Pending:
    rows: np.ndarray
    model: LoadedModel
    shadow: LoadedModel | None
    future: asyncio.Future[Scores]


class Scorer:
    def __init__(
        self,
        model: LoadedModel,
        *,
        mode: Literal["batch", "inline"] = "inline",
        workers: int = 1,
        max_batch: int = 256,
        max_pending: int = 4096,
        observer: Observer | None = None,
    ) -> None:
        self.active = model
        self.previous: LoadedModel | None = None
        self.shadow: LoadedModel | None = None
        self.mode = mode
        self.workers = workers
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.observer: Observer = observer or _Silent()
        self._executor: ThreadPoolExecutor | None = None
        self._queue: list[_Pending] = []
        self._running = 0
        self._scheduled = False
        self.swaps = 0

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="portcullis-scorer")

    def close(self) -> None:
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(ScoringError("scorer closed"))
        self._queue.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    # --- model management (swap by reference) ----------------------------------------------------
    def activate(self, model: LoadedModel) -> LoadedModel:
        """Make `model` active (already loaded and verified); the one it replaces becomes `previous`."""
        old = self.active
        if model is not old:
            self.previous, self.active = old, model
            if self.shadow is not None and self.shadow.key == model.key:
                self.shadow = None
            self.swaps += 1
        return old

    def rollback(self) -> LoadedModel:
        if self.previous is None:
            raise LookupError("no previous model to roll back to")
        self.activate(self.previous)
        return self.active

    def set_shadow(self, model: LoadedModel | None) -> None:
        self.shadow = model

    # --- scoring ---------------------------------------------------------------------------------
    async def score(self, rows: np.ndarray, model: LoadedModel | None = None, timeout_s: float = 0.05) -> Scores:
        """Scores of one request's feature rows ([k, F] float32) by `model` (default: the active one)."""
        model = model or self.active
        shadow = self.shadow
        if self.mode == "inline" or self._executor is None:
            return self._run(rows, model, shadow)
        if len(self._queue) >= self.max_pending:
            raise ScoringError("scoring queue full")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Scores] = loop.create_future()
        self._queue.append(_Pending(rows, model, shadow, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            raise ScoringError(f"scoring took longer than {timeout_s * 1000:.0f} ms") from None

    def score_now(self, rows: np.ndarray, model: LoadedModel) -> Scores | None:
        """In `inline` mode, the scores right away (no coroutine, no task); None in `batch` mode,
        where the caller awaits `score` instead. Raises `ScoringError` as `score` does."""
        if self.mode == "inline" or self._executor is None:
            return self._run(rows, model, self.shadow)
        return None

    def _run(self, rows: np.ndarray, model: LoadedModel, shadow: LoadedModel | None) -> Scores:
        started = time.perf_counter()
        values = model.run(rows)
        shadow_values = shadow.run(rows) if shadow is not None else None
        self.observer.batch(len(rows), time.perf_counter() - started)
        return Scores(model, values, shadow, shadow_values)

    def _dispatch(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._queue and self._running < self.workers:
            batch, size = [], 0
            while self._queue and size < self.max_batch:
                pending = self._queue.pop(0)
                if pending.future.done():  # its request gave up (timeout, disconnect)
                    continue
                batch.append(pending)
                size += len(pending.rows)
            if not batch:
                return
            self._running += 1
            assert self._executor is not None
            job = loop.run_in_executor(self._executor, self._run_batch, batch)
            job.add_done_callback(self._finished(batch))

    def _run_batch(self, batch: list[_Pending]) -> list[Scores | BaseException]:
        """In a worker thread: one `session.run` per distinct (model, shadow) in the batch."""
        out: list[Scores | BaseException] = [ScoringError("not scored")] * len(batch)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, pending in enumerate(batch):
            groups.setdefault((id(pending.model), id(pending.shadow)), []).append(i)
        for indexes in groups.values():
            first = batch[indexes[0]]
            rows = np.concatenate([batch[i].rows for i in indexes]) if len(indexes) > 1 else first.rows
            try:
                scored = self._run(rows, first.model, first.shadow)
            except ScoringError as exc:
                for i in indexes:
                    out[i] = exc
                continue
            offset = 0
            for i in indexes:
                n = len(batch[i].rows)
                shadow_values = scored.shadow_values[offset : offset + n] if scored.shadow_values is not None else None
                out[i] = Scores(scored.model, scored.values[offset : offset + n], scored.shadow, shadow_values)
                offset += n
        return out

    def _finished(self, batch: list[_Pending]) -> Callable[[asyncio.Future[list[Scores | BaseException]]], None]:
        def done(job: asyncio.Future[list[Scores | BaseException]]) -> None:
            self._running -= 1
            try:
                results: list[Scores | BaseException] = job.result()
            except (RuntimeError, asyncio.CancelledError) as exc:  # the executor shut down under it
                results = [ScoringError(f"scoring failed: {exc!r}")] * len(batch)
            for pending, result in zip(batch, results):
                if pending.future.done():
                    continue
                if isinstance(result, BaseException):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
            if self._queue:
                self._dispatch()

        return done
