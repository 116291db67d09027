"""`Screening`: the screening policy itself, its phases, scoring and model lifecycle.

Sits in the pipeline's `on_request` / `on_message` / `on_complete` phases (see the package docstring
for what it decides). Per call it keeps only which calls wait for their first message and which are
upgraded streams; per process, the repeat memo (requests that repeat exactly: their row and their
outcome) and its tallies. It owns the `Scorer` (started in `start`, closed in `stop`) and swaps its
model for the admin API. Config lives in `config`, the feature rows of routes with field rules in
`field_rows`, the repeat memo's keys and entries in `kept_rows`, the block's body and reason in
`verdict`, decisions, scores, durations and memo hits in `tallies`, batch observations in `observer`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np

from gateway.call import Call
from gateway.metrics_registry import (
    SCREENING_FALLBACKS,
    SCREENING_MODEL_SWAPS,
    SCREENING_SHADOW_DISAGREEMENTS,
    before_collect,
    multiprocess_dir,
)
from gateway.pipeline import Reply
from gateway.policies.base import BasePolicy, RouteConfigs
from gateway.policies.screening.config import ScreeningConfig
from gateway.policies.screening.field_rows import _rows_by_field
from gateway.policies.screening.kept_rows import (
    Kept,
    Outcome,
    copy_note,
    forget_outcomes,
    keep,
    message_key,
    values_key,
)
from gateway.policies.screening.observer import _Observer
from gateway.policies.screening.tallies import _Tallies
from gateway.policies.screening.verdict import _round4, category, problem
from screening import features, record
from screening.inference import Scorer, Scores
from screening.registry import LoadedModel, ModelRefused, ModelRegistry, ScoringError
from screening.values import add_message_values, head_values
from translators.errors import GatewayError

log = logging.getLogger("portcullis.screening")


class Screening(BasePolicy):
    name = "screening"

    def __init__(self, configs: RouteConfigs[ScreeningConfig]) -> None:
        self.configs = configs
        self.settings = configs.default
        self.registry = ModelRegistry(self.settings.models_dir)
        self.scorer: Scorer | None = None
        self.load_error: str | None = None
        # Calls whose head waits for their first message, with their route's config (looked up once).
        self._pending: dict[int, ScreeningConfig] = {}
        self._streams: set[int] = set()  # upgraded calls: head already screened, messages alone
        self._lock = asyncio.Lock()
        self._kept: dict[tuple[Any, ...], Kept] = {}  # a repeated request's key (`kept_rows`) -> its entry
        self._seen: set[int] = set()  # hashes of the keys seen once
        # One worker: the tallies are plain numbers, pushed into prometheus-client right before a scrape
        # (as the metrics policy does); several workers (multiprocess files): every observation writes through.
        eager = multiprocess_dir() is not None
        self._tallies = _Tallies(eager)
        self._observer = _Observer(not eager and self.settings.inference == "inline")  # batch runs in threads
        self._remove_hook: Callable[[], None] | None = None if eager else before_collect(self.push)
        self.shadow_disagreements = 0
        self.shadow_scored = 0

    # --- lifecycle ----------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return any(cfg.mode != "off" for cfg in self.configs.all())

    async def start(self) -> None:
        if not self.enabled:
            return
        cfg = self.settings
        try:
            model = await asyncio.to_thread(self.registry.load, cfg.model, cfg.version)
        except ModelRefused as exc:
            self.load_error = str(exc)
            if not cfg.fail_open:
                raise
            log.error("screening runs without a model (fail_open): %s", exc)
            return
        self.scorer = Scorer(model, mode=cfg.inference, workers=cfg.workers, max_batch=cfg.max_batch,
                             max_pending=cfg.max_pending, observer=self._observer)
        self.scorer.start()
        if cfg.shadow:
            await self.set_shadow(cfg.shadow)
        log.info("screening with %s (threshold %.4f)", model.key, model.manifest.threshold)

    async def stop(self) -> None:
        # A reload stops this policy while its last calls may still complete: they write through.
        self.push()
        self._tallies.eager = True
        self._observer.deferred = False
        if self._remove_hook is not None:
            self._remove_hook()
            self._remove_hook = None
        if self.scorer is not None:
            await asyncio.to_thread(self.scorer.close)

    def push(self) -> None:
        """Move the pending tallies into the prometheus-client metrics."""
        self._tallies.push()
        self._observer.push()

    # --- model lifecycle (admin API) ------------------------------------------------------------------
    async def load(self, version: str, name: str | None = None) -> LoadedModel:
        """Load and verify a version in a thread; raises `ModelRefused` (nothing changes then)."""
        try:
            return await asyncio.to_thread(self.registry.load, name or self.settings.model, version)
        except ModelRefused:
            SCREENING_MODEL_SWAPS.labels("refused").inc()
            raise

    async def activate(self, version: str, name: str | None = None) -> LoadedModel:
        async with self._lock:
            model = await self.load(version, name)
            if self.scorer is None:
                cfg = self.settings
                self.scorer = Scorer(model, mode=cfg.inference, workers=cfg.workers, max_batch=cfg.max_batch,
                                     max_pending=cfg.max_pending, observer=self._observer)
                self.scorer.start()
            else:
                self.scorer.activate(model)
            forget_outcomes(self._kept)
            SCREENING_MODEL_SWAPS.labels("activated").inc()
            log.info("screening model %s activated", model.key)
            return model

    async def rollback(self) -> LoadedModel:
        async with self._lock:
            if self.scorer is None:
                raise LookupError("no model is loaded")
            model = self.scorer.rollback()
            forget_outcomes(self._kept)
            SCREENING_MODEL_SWAPS.labels("rolled_back").inc()
            log.info("screening model rolled back to %s", model.key)
            return model

    async def set_shadow(self, version: str | None, name: str | None = None) -> LoadedModel | None:
        async with self._lock:
            if self.scorer is None:
                raise LookupError("no model is loaded")
            model = await self.load(version, name) if version else None
            self.scorer.set_shadow(model)
            forget_outcomes(self._kept)
            self.shadow_disagreements = self.shadow_scored = 0
            return model

    def status(self) -> dict[str, Any]:
        scorer = self.scorer
        return {
            "active": scorer.active.describe() if scorer else None,
            "previous": scorer.previous.describe() if scorer and scorer.previous else None,
            "shadow": scorer.shadow.describe() if scorer and scorer.shadow else None,
            "shadow_scored": self.shadow_scored,
            "shadow_disagreements": self.shadow_disagreements,
            "swaps": scorer.swaps if scorer else 0,
            "load_error": self.load_error,
            "available": [{"name": n, "version": v} for n in self.registry.names() for v in self.registry.versions(n)],
        }

    # --- phases -------------------------------------------------------------------------------------
    # Plain functions (see `gateway.pipeline`): they return None when the request was decided at once
    # (inline inference, the default), or the coroutine to await when a batched score has to come back.
    def on_request(self, call: Call) -> Awaitable[None] | None:
        cfg = self.configs.for_call(call)
        if cfg.mode == "off":
            return None
        if call.headers.get("Upgrade", "").lower() == "websocket":
            self._streams.add(id(call))
            started = time.perf_counter()
            head = record.from_request(call.method, call.path, call.query.items(), call.headers, None, cfg.headers)
            return self._screen(call, cfg, head, head.dropped, False, started)
        self._pending[id(call)] = cfg
        return None

    def on_message(self, call: Call, message: Any) -> Awaitable[None] | None:
        cfg = self._pending.pop(id(call), None)
        if cfg is not None:  # the request's first message: screened with its head, once
            started = time.perf_counter()
            if not cfg.fields:  # the common case: the values alone, no record (the same values, in order)
                return self._screen_values(call, cfg, message, started)
            rec = record.from_request(call.method, call.path, call.query.items(), call.headers, message, cfg.headers)
            return self._screen(call, cfg, rec, rec.dropped, False, started)
        cfg = self.configs.for_call(call)
        if cfg.mode == "off":
            return None
        started = time.perf_counter()
        rec = record.from_message(call.method, call.path, message)
        return self._screen(call, cfg, rec, rec.dropped, True, started)

    def on_complete(self, call: Call) -> None:
        pending = self._pending
        if pending:
            pending.pop(id(call), None)
        streams = self._streams
        if streams:
            streams.discard(id(call))

    # --- scoring ------------------------------------------------------------------------------------
    def _screen_values(self, call: Call, cfg: ScreeningConfig, message: Any, started: float
                       ) -> Awaitable[None] | None:
        """A request's first message on a route without field rules (the common case). A repeat of a kept
        request is decided from its outcome when that was worked out for the current models and this
        route's config; else it is scored from its kept row; else its values are walked and scored. A
        protobuf message is keyed before its walk (`kept_rows.message_key`), any other after it."""
        values = head_values(call.path, call.query.items(), call.headers, cfg.headers)
        key = message_key(values, message)
        kept = self._kept.get(key) if key is not None else None
        if kept is None:
            dropped = add_message_values(values, message)
            if key is None:
                key = values_key(values, dropped)
                kept = self._kept.get(key) if key is not None else None
            if kept is None:
                return self._screen(call, cfg, values, dropped, False, started, key)
        outcome, scorer = kept.outcome, self.scorer
        if (outcome is not None and scorer is not None and outcome.model is scorer.active
                and outcome.shadow is scorer.shadow and outcome.cfg is cfg):
            ticket, attributes, tallies = outcome.ticket, call.attributes, self._tallies
            if (ticket is not None and not tallies.eager and outcome.route == call.route
                    and "screening" not in attributes):
                # The usual repeat (allowed, no shadow, one worker, this route): `_repeat`'s note and
                # `_settle`'s accounting, with the tallies' places looked up once (`_Tallies.ticket`).
                note = outcome.note.copy()
                note["top_features"] = note["top_features"].copy()
                attributes["screening"] = note
                tallies.repeat(ticket, outcome.score, time.perf_counter() - started)
                return None
            route = call.route or "unmatched"
            try:
                self._repeat(call, outcome)
            finally:
                self._tallies.took(route, time.perf_counter() - started)
            if (outcome.route == route and outcome.shadow is None and outcome.note["verdict"] == "allow"
                    and "top_features" in outcome.note):
                outcome.ticket = self._tallies.ticket(route, "allow", outcome.score)
            return None
        return self._screen(call, cfg, kept.values, 0, False, started, kept=kept)  # its row has `dropped` in it

    def _screen(self, call: Call, cfg: ScreeningConfig, rec: record.RequestRecord | list[str], dropped: int,
                stream: bool, started: float, key: tuple[Any, ...] | None = None, kept: Kept | None = None
                ) -> Awaitable[None] | None:
        """Score `rec` (a record, or its screened values when the route has no field rules: then kept, or
        noted, under `key`, or scored from `kept`) and apply the verdict; the coroutine to await when the
        score is batched."""
        waiting: Awaitable[None] | None = None
        try:
            route = call.route or "unmatched"
            scorer = self.scorer
            if scorer is None:
                self._fallback(call, cfg, route, "unavailable")
                return None
            model = scorer.active  # read once: a swap during this request does not change its model
            threshold = cfg.threshold or model.manifest.threshold
            if type(rec) is list:  # the common case: one row, the request's values against the route's threshold
                if kept is not None:
                    X = kept.X
                else:
                    X = features.combine(features.field_vectors(rec), dropped)[None, :]
                    if key is not None:
                        kept = keep(self._kept, self._seen, key, X, rec)
                thresholds, row_values = [threshold], [rec]
            elif cfg.fields and isinstance(rec, record.RequestRecord):
                rows, thresholds, row_values = _rows_by_field(rec, cfg, threshold)
                if not rows:
                    self._tallies.decide(route, "skip")
                    return None
                X = np.stack(rows)
            else:  # one row, the whole record
                assert isinstance(rec, record.RequestRecord)
                values = features.field_values(rec)
                X = features.combine(features.field_vectors(values), dropped)[None, :]
                thresholds, row_values = [threshold], [values]
            try:
                scores = scorer.score_now(X, model)
            except ScoringError as exc:
                self._fallback(call, cfg, route, "error", str(exc))
                return None
            if scores is None:
                waiting = self._wait(scorer, call, cfg, route, model, X, thresholds, row_values, stream, started,
                                     kept)
                return waiting
            self._verdict(call, cfg, route, scores, X, thresholds, row_values, stream, kept)
            return None
        finally:
            if waiting is None:
                self._tallies.took(call.route or "unmatched", time.perf_counter() - started)

    async def _wait(self, scorer: Scorer, call: Call, cfg: ScreeningConfig, route: str, model: LoadedModel,
                    X: np.ndarray, thresholds: list[float], row_values: list[list[str]], stream: bool,
                    started: float, kept: Kept | None) -> None:
        try:
            try:
                scores = await scorer.score(X, model, cfg.timeout_ms / 1000)
            except ScoringError as exc:
                self._fallback(call, cfg, route, "timeout" if "longer than" in str(exc) else "error", str(exc))
                return
            self._verdict(call, cfg, route, scores, X, thresholds, row_values, stream, kept)
        finally:
            self._tallies.took(call.route or "unmatched", time.perf_counter() - started)

    def _verdict(self, call: Call, cfg: ScreeningConfig, route: str, scores: Scores, X: np.ndarray,
                 thresholds: list[float], row_values: list[list[str]], stream: bool, kept: Kept | None) -> None:
        """The note of a scored request, remembered as `kept`'s outcome when it is kept, then applied."""
        model = scores.model
        if len(thresholds) == 1:
            worst, score = 0, scores.values.item(0)  # row 0's score, as a Python float (no slice)
            flagged = score >= thresholds[0]
        else:
            column = scores.values[:, 0]
            margins = column - np.asarray(thresholds)
            worst, score = int(np.argmax(margins)), float(column.max())
            flagged = bool((margins >= 0).any())
        verdict = "allow" if not flagged else ("block" if cfg.mode == "block" else "flag")
        note: dict[str, Any] = {"verdict": verdict, "score": _round4(score), "threshold": _round4(thresholds[worst]),
                                "model": model.key}
        if verdict != "allow":
            # Named features (the hashed n-grams resolved against this request's values) for the log
            # and for the reason category; allowed requests log the cheaper unresolved names.
            top = features.top_contributions(X[worst], model.weights, max(cfg.top_features, 12), row_values[worst],
                                             model.baseline)
            note["top_features"] = [name for name, _ in top[: cfg.top_features]]
            note["category"] = category([name for name, _ in top])
        elif cfg.top_features:
            note["top_features"] = [name for name, _ in model.top_features(X[worst], cfg.top_features)]
        shadow, shadow_values = scores.shadow, scores.shadow_values
        if shadow is not None and shadow_values is not None:
            shadow_over = bool((shadow_values[:, 0] >= shadow.manifest.threshold).any())
            note["shadow"] = {"model": shadow.key, "score": round(float(shadow_values[:, 0].max()), 4)}
            if shadow_over != flagged:
                note["shadow"]["disagrees"] = True
        if kept is not None:
            kept.outcome = Outcome(model, shadow, cfg, note, score, route)
        self._settle(call, route, note, score, stream)

    def _repeat(self, call: Call, outcome: Outcome) -> None:
        """Apply a kept request's outcome to a request that repeats it: a note of its own, and its own
        accounting (tallies, shadow counts, a block naming its request id)."""
        self._tallies.hit()
        self._settle(call, call.route or "unmatched", copy_note(outcome.note), outcome.score, False)

    def _settle(self, call: Call, route: str, note: dict[str, Any], score: float, stream: bool) -> None:
        """What every scored request does with its note, scored or repeated: shadow counts, the note
        into `call.attributes` (the higher score of a call's messages), the tallies, and the block."""
        shadow = note.get("shadow")
        if shadow is not None:
            self._count_shadow(call, route, note, shadow)
        previous = call.attributes.get("screening")
        if previous is None or previous.get("score", 0) <= note["score"]:
            call.attributes["screening"] = note
        verdict = note["verdict"]
        self._tallies.decide(route, verdict)
        self._tallies.score(route, score)
        if verdict == "block":
            log.info("request %s blocked on %s: score %.3f (%s)", call.request_id, route, score, note.get("category"))
            reason = note.get("category", "anomalous-request")
            if stream:
                raise GatewayError(grpc.StatusCode.PERMISSION_DENIED, f"message blocked by screening ({reason})")
            raise Reply(403, {"Content-Type": "application/problem+json"}, problem(call.request_id, reason))

    def _count_shadow(self, call: Call, route: str, note: dict[str, Any], shadow: dict[str, Any]) -> None:
        self.shadow_scored += 1
        if shadow.get("disagrees"):
            self.shadow_disagreements += 1
            SCREENING_SHADOW_DISAGREEMENTS.labels(route).inc()
            flagged = note["verdict"] != "allow"  # the shadow's verdict is the other one
            log.info("request %s on %s: shadow %s %s, active %s %s", call.request_id, route, shadow["model"],
                     "allows" if flagged else "flags", note["model"], "flags" if flagged else "allows")

    def _fallback(self, call: Call, cfg: ScreeningConfig, route: str, reason: str, detail: str = "") -> None:
        outcome = "allowed" if cfg.fail_open or cfg.mode == "monitor" else "refused"
        SCREENING_FALLBACKS.labels(reason, outcome).inc()
        self._tallies.decide(route, "error")
        call.attributes["screening"] = {"verdict": "error", "reason": reason, "fallback": outcome}
        if detail:
            log.warning("request %s: screening %s (%s): %s", call.request_id, reason, outcome, detail)
        if outcome == "refused":
            raise GatewayError(grpc.StatusCode.UNAVAILABLE, "request screening is unavailable")
