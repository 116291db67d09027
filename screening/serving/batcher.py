"""The dynamic batcher of one model version: a bounded queue and the threads that run it.

onnxruntime has no async API, releases the GIL in `run`, and one session serves concurrent runs;
so each version gets `instances` worker threads sharing its session, fed by one queue. A request is
enqueued from the event loop (`infer`); the queue is bounded by `max_queue_size`, beyond which it
fails fast with `QueueFull`. A worker takes the oldest request and, when the model batches and
dynamic batching is on, every compatible request behind it (same shapes past the batch dimension)
up to `max_batch_size` rows; if the batch is not full it waits for more until the oldest request has
waited `max_queue_delay_us` (Triton's rule). Then it concatenates the inputs, runs once, splits the
outputs by rows, and hands the whole batch back to the loop in one `call_soon_threadsafe`. With
batching off every request runs alone, still on the worker threads, so the two modes differ only
in how many requests share a run. The worker picks its next batch itself: no loop round trip
between two runs.

`close` stops taking requests (`ModelNotReady`) and lets the workers drain what is queued before
they exit. An `Observer` sees every run (rows, requests' queue times, compute time), from the
worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from screening.serving.errors import ModelNotReady, QueueFull, ServingError
from screening.serving.model import LoadedModel

log = logging.getLogger("portcullis.serving")


class Observer(Protocol):
    def executed(self, model: LoadedModel, rows: int, queue_s: Sequence[float], compute_s: float) -> None: ...


class _Silent:
    def executed(self, model: LoadedModel, rows: int, queue_s: Sequence[float], compute_s: float) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Result:
    outputs: dict[str, np.ndarray]
    queue_s: float
    compute_s: float
    batch_rows: int  # rows of the run this request was part of


@dataclass(slots=True)
class _Job:
    feeds: dict[str, np.ndarray]
    rows: int
    outputs: tuple[str, ...]  # empty: all
    future: asyncio.Future[Result]
    loop: asyncio.AbstractEventLoop
    enqueued: float
    shape_key: tuple[tuple[str, tuple[int, ...]], ...]


class Batcher:
    def __init__(self, model: LoadedModel, observer: Observer | None = None) -> None:
        self.model = model
        settings = model.settings
        self.batching = settings.batching
        self.max_rows = max(settings.max_batch_size, 1)
        self.delay_s = settings.dynamic_batching.max_queue_delay_us / 1e6
        self.max_queue = settings.max_queue_size
        self.observer: Observer = observer or _Silent()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[_Job] = deque()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._work, name=f"portcullis-infer-{model.key}-{i}", daemon=True)
            for i in range(settings.instances)
        ]

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    async def close(self) -> None:
        """Refuse new requests, run those queued, then end the workers."""
        with self._lock:
            self._closing = True
            self._wake.notify_all()
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    async def infer(self, feeds: dict[str, np.ndarray], rows: int, outputs: Sequence[str] = ()) -> Result:
        """Queue one checked request and wait for its outputs."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        key = tuple((name, array.shape[1:]) for name, array in sorted(feeds.items())) if self.batching else ()
        job = _Job(feeds, rows, tuple(outputs), future, loop, time.perf_counter(), key)
        with self._lock:
            if self._closing:
                raise ModelNotReady(f"model {self.model.key} is unloading")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"model {self.model.key}: {self.max_queue} requests already queued")
            self._queue.append(job)
            if self.batching:
                self._wake.notify_all()  # a worker filling a batch must see it, not only an idle one
            else:
                self._wake.notify()
        return await future

    # --- worker threads -------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if not self._queue:
                    return  # closing, and nothing left to run
                batch = self._take()
            if batch:
                self._run(batch)

    def _take(self) -> list[_Job]:
        """The next batch (lock held): the oldest live request and, when batching, those that fit behind it."""
        queue = self._queue
        first = None
        while queue:
            job = queue.popleft()
            if not job.future.done():  # a request that gave up (disconnect, timeout) is dropped here
                first = job
                break
        if first is None:
            return []
        batch, rows = [first], first.rows
        if not self.batching:
            return batch
        deadline = first.enqueued + self.delay_s
        while rows < self.max_rows:
            blocked = False
            while queue and rows < self.max_rows:
                job = queue[0]
                if job.future.done():
                    queue.popleft()
                    continue
                if job.shape_key != first.shape_key or rows + job.rows > self.max_rows:
                    blocked = True  # the next request cannot join: run this batch now, it starts the next
                    break
                queue.popleft()
                batch.append(job)
                rows += job.rows
            if blocked or rows >= self.max_rows or self._closing:
                break
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wake.wait(remaining)
        return batch

    def _run(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        wanted: tuple[str, ...] = ()
        if all(job.outputs for job in batch):
            wanted = tuple(dict.fromkeys(name for job in batch for name in job.outputs))
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            feeds = {name: np.concatenate([job.feeds[name] for job in batch]) for name in batch[0].feeds}
        rows = sum(job.rows for job in batch)
        results: list[Result | ServingError]
        try:
            values = self.model.run(feeds, wanted or None)
        except ServingError as exc:
            compute = time.perf_counter() - started
            results = [exc] * len(batch)
        else:
            compute = time.perf_counter() - started
            results = []
            offset = 0
            for job in batch:
                names = job.outputs or tuple(values)
                if len(batch) == 1:
                    outs = {name: values[name] for name in names}
                else:
                    outs = {name: values[name][offset : offset + job.rows] for name in names}
                offset += job.rows
                results.append(Result(outs, started - job.enqueued, compute, rows))
        try:
            self.observer.executed(self.model, rows, [started - job.enqueued for job in batch], compute)
        except Exception:  # an observer must never lose a batch's results
            log.exception("inference observer failed")
        try:
            batch[0].loop.call_soon_threadsafe(_deliver, batch, results)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _deliver(batch: list[_Job], results: list[Result | ServingError]) -> None:
    for job, result in zip(batch, results):
        if job.future.done():
            continue
        if isinstance(result, ServingError):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)
