"""The screening policy's repeat cache: the feature rows of requests that repeat exactly, and what is kept
with them.

`gateway.policies.screening.policy` owns the two per-process containers (a request's `(*values,
dropped)` -> its `Kept`, and the hashes of keys seen once) and looks a request up in them on every
scored request without field rules; `keep` decides what goes in, `Kept` is what comes out. The
features are a pure function of the values, and the top contributing features a pure function of the
row, the model and how many are asked for, so a request sent again (a polling client, a health check,
a retry) costs one look-up instead of its features, `combine` and the contribution passes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from screening.registry import LoadedModel

# At most this many rows, of requests whose every value is at most this long (about 16 KiB each with
# the 4,007-wide vector).
VECTORS_CACHED = 256
VECTOR_CACHE_CHARS = 256
SEEN_NOTED = 4096  # keys seen once (their hashes), so that only a repeat is kept


class Kept:
    """A kept feature row ([1, F], read-only) and the names of its top contributing features under the
    model and count they were last worked out for (`names` is valid only when `model` is the model
    scoring and `k` the count asked; the policy works them out again and stores them otherwise)."""

    __slots__ = ("X", "k", "model", "names")

    def __init__(self, X: np.ndarray) -> None:
        self.X = X
        self.model: LoadedModel | None = None
        self.k = 0
        self.names: list[str] = []


def keep(rows: dict[tuple[Any, ...], Kept], seen: set[int], key: tuple[Any, ...], X: np.ndarray,
         values: list[str]) -> None:
    """Keep the [1, F] feature row of a request's values the second time they are seen, when every value
    is short. The first sighting only notes the key's hash, so a stream of new requests keeps no rows
    (and does not churn the cache)."""
    digest = hash(key)
    if digest not in seen:
        if len(seen) >= SEEN_NOTED:
            seen.clear()
        seen.add(digest)
        return
    if max(map(len, values), default=0) <= VECTOR_CACHE_CHARS:
        X.flags.writeable = False  # shared from now on by every request with these values
        if len(rows) >= VECTORS_CACHED:
            rows.clear()
        rows[key] = Kept(X)
