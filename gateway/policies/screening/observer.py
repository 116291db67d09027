"""`_Observer`: the `Scorer`'s batch sizes and inference times, as the screening policy counts them.

Handed to the `Scorer` by `gateway.policies.screening.policy`; called once per onnxruntime run, on the
event loop (`inline`) or from executor threads (`batch`). Pushed with the policy's other tallies
before a scrape.
"""

from __future__ import annotations

from bisect import bisect_left

from gateway.metrics_registry import SCREENING_BATCH_SIZE, SCREENING_INFERENCE_DURATION, Tally


class _Observer:
    """Batch sizes and inference times; tallied when every run is on the event loop (`inline`, one
    worker), written through otherwise (batch runs report from executor threads)."""

    def __init__(self, deferred: bool) -> None:
        self.deferred = deferred
        self.sizes = Tally(SCREENING_BATCH_SIZE)
        self.seconds = Tally(SCREENING_INFERENCE_DURATION)
        self._one = bisect_left(self.sizes.bounds, 1)  # the bucket of a one-row run, found once

    def batch(self, size: int, seconds: float) -> None:
        if self.deferred:
            sizes = self.sizes
            if size == 1:  # inline, one request's row: `Tally.observe(1)` without its bisect
                sizes.counts[self._one] += 1
                sizes.total += 1
            else:
                sizes.observe(size)
            self.seconds.observe(seconds)
        else:
            SCREENING_BATCH_SIZE.observe(size)
            SCREENING_INFERENCE_DURATION.observe(seconds)

    def push(self) -> None:
        self.sizes.push()
        self.seconds.push()
