"""`_Tallies`: what the screening policy counts per request, kept as plain numbers until a scrape.

Owned by `gateway.policies.screening.policy` (one per policy) and written on every screened request:
decisions by route and verdict, scores and durations by route, and repeat-memo hits. With one worker
they add to plain ints and `Tally`s, pushed into prometheus-client by `push` (the policy's
`before_collect` hook, as the metrics policy does); with several workers (multiprocess files), or
once the policy has stopped, every observation writes through (`eager`).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from gateway.metrics_registry import (
    SCREENING_DECISIONS,
    SCREENING_DURATION,
    SCREENING_MEMO_HITS,
    SCREENING_SCORE,
    Tally,
)


class _Tallies:
    def __init__(self, eager: bool) -> None:
        self.eager = eager
        self.decisions: dict[tuple[str, str], list[Any]] = {}  # [pending count, Counter child]
        self.scores: dict[str, Tally] = {}
        self.durations: dict[str, Tally] = {}
        self.memo_hits = 0  # not yet pushed

    def push(self) -> None:
        """Move the pending tallies into the prometheus-client metrics."""
        for entry in self.decisions.values():
            if entry[0]:
                entry[1].inc(entry[0])
                entry[0] = 0
        for tally in self.scores.values():
            tally.push()
        for tally in self.durations.values():
            tally.push()
        if self.memo_hits:
            SCREENING_MEMO_HITS.inc(self.memo_hits)
            self.memo_hits = 0

    def decide(self, route: str, verdict: str) -> None:
        entry = self.decisions.get((route, verdict))
        if entry is None:
            entry = self.decisions[route, verdict] = [0, SCREENING_DECISIONS.labels(route, verdict)]
        if self.eager:
            entry[1].inc()
        else:
            entry[0] += 1

    def hit(self) -> None:
        """A request decided from the repeat memo."""
        if self.eager:
            SCREENING_MEMO_HITS.inc()
        else:
            self.memo_hits += 1

    def ticket(self, route: str, verdict: str, score: float) -> tuple[list[Any], Tally, int, Tally] | None:
        """A kept outcome's accounting worked out once, for `repeat`: its decision entry, its route's score
        tally and the bucket its score falls in, and the route's duration tally. None when eager (every
        observation writes through) or when the route has not been counted yet."""
        entry, scores, durations = self.decisions.get((route, verdict)), self.scores.get(route), self.durations.get(route)
        if self.eager or entry is None or scores is None or durations is None:
            return None
        return entry, scores, bisect_left(scores.bounds, score), durations

    def repeat(self, ticket: tuple[list[Any], Tally, int, Tally], score: float, seconds: float) -> None:
        """A request decided from the repeat memo with a `ticket` (one worker, not eager): its decision,
        its score, its duration and the hit, as `decide`, `score`, `took` and `hit` count them. The
        score's bucket comes from the ticket, so `Tally.observe`'s two lines are written out for it."""
        entry, scores, bucket, durations = ticket
        entry[0] += 1
        scores.counts[bucket] += 1
        scores.total += score
        durations.observe(seconds)
        self.memo_hits += 1

    def took(self, route: str, seconds: float) -> None:
        self._observe(self.durations, SCREENING_DURATION, route, seconds)

    def score(self, route: str, score: float) -> None:
        self._observe(self.scores, SCREENING_SCORE, route, score)

    def _observe(self, tallies: dict[str, Tally], metric: Any, route: str, value: float) -> None:
        """One observation of a per-route histogram: written through when eager, else tallied."""
        tally = tallies.get(route)
        if tally is None:
            tally = tallies[route] = Tally(metric.labels(route))
        if self.eager:
            tally.child.observe(value)
        else:
            tally.observe(value)
