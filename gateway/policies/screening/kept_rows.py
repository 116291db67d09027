"""The screening policy's repeat memo: requests that repeat exactly, their feature row and their outcome.

`gateway.policies.screening.policy` owns the two per-process containers (a request's key -> its `Kept`,
and the hashes of keys seen once) and looks every scored request without field rules up in them; the
key is made here (`message_key`, `values_key`), `keep` decides what goes in and `Kept` is what comes
out. A kept request carries its row (to score it again for another model) and the `Outcome` the last
scoring gave: the note for the access log and the score, valid for one (active model, shadow model,
route config) by identity. A request sent again (a polling client, a health check, a retry) for the
same models and route then costs its key, one look-up and a copy of the note: no leaf walk, no
features and no onnxruntime run. The per-request accounting (tallies, shadow counts, the block) stays
with the policy.

Why equal keys give equal `(values, dropped)` (what `screening.values.request_values` returns):
- a protobuf message's key is its head's screened values (`head_values`: path, query, screened
  headers, already what `request_values` puts first), the message's type and
  `SerializePartialToString()`. The message's values and `dropped` (`add_message_values`) are a
  function of its set fields, their values and its maps' iteration order. Same type and same bytes
  mean the same set fields with the same values (the wire format is parsed one way; unknown fields
  are in the bytes too, so they only make keys differ), and the same map order: upb writes a map's
  entries in its iteration order (reversed), while `deterministic=True` sorts them and would lose
  it, and upb's iteration order depends on the order of insertion (tests show both);
- any other message (a dict, JSON bytes, None) is keyed by its values and `dropped` themselves,
  once walked. The two shapes never meet: the last item is bytes in one, an int in the other.
Keys are bounded (`KEY_CHARS`): a long request is scored every time and never kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.message import Message

from gateway.metrics_registry import Tally
from gateway.policies.screening.config import ScreeningConfig
from screening.registry import LoadedModel

KEPT = 256  # requests kept (about 16 KiB of row each with the 4,007-wide vector, plus the key)
KEY_CHARS = 2048  # characters of head values plus bytes of message (or characters of values) in a key
SEEN_NOTED = 4096  # keys seen once (their hashes), so that only a repeat is kept


class Outcome:
    """What scoring a kept request gave: the note (verdict, score, threshold, model, top features,
    category, shadow) and the score, for the `model`, `shadow` and route config `cfg` it was worked
    out with (valid only while the policy's current ones are these very objects). `note` is never
    handed out: `copy_note` gives each request its own."""

    __slots__ = ("cfg", "model", "note", "route", "score", "shadow", "ticket")

    def __init__(self, model: LoadedModel, shadow: LoadedModel | None, cfg: ScreeningConfig,
                 note: dict[str, Any], score: float, route: str) -> None:
        self.model, self.shadow, self.cfg, self.score, self.route = model, shadow, cfg, score, route
        self.note = copy_note(note)
        # The usual repeat's accounting (`_Tallies.ticket`), set at the first repeat of an allowed
        # request without a shadow: a repeat on `route` then costs a note copy and one `_Tallies.repeat`.
        self.ticket: tuple[list[Any], Tally, int, Tally] | None = None


class Kept:
    """A kept request: its feature row ([1, F], read-only), its screened values (which name the
    hashed n-grams of a flagged request's top features), and its last `Outcome` (None until scored)."""

    __slots__ = ("X", "outcome", "values")

    def __init__(self, X: np.ndarray, values: list[str]) -> None:
        self.X = X
        self.values = values
        self.outcome: Outcome | None = None


def copy_note(note: dict[str, Any]) -> dict[str, Any]:
    """A note that shares no mutable part with `note` (the access log and the shadow comparison
    read and extend a request's note)."""
    copied = note.copy()
    top = copied.get("top_features")
    if top is not None:
        copied["top_features"] = top.copy()
    shadow = copied.get("shadow")
    if shadow is not None:
        copied["shadow"] = shadow.copy()
    return copied


def forget_outcomes(kept: dict[tuple[Any, ...], Kept]) -> None:
    """Drop every kept outcome, keeping the rows: called after a model swap or shadow change, so that
    outcomes no longer hold a retired model (and its onnxruntime session) alive. Never needed for
    correctness (a hit checks the models by identity); a request scored across the change may still
    leave an outcome of the old model, replaced at its next repeat."""
    for entry in kept.values():
        entry.outcome = None


def message_key(head: list[str], message: Any) -> tuple[Any, ...] | None:
    """The repeat key of a request with a protobuf message, from its head's screened values (see the
    module docstring for why it is exact); None for any other message or beyond `KEY_CHARS`."""
    if not isinstance(message, Message):
        return None
    body = message.SerializePartialToString()  # partial: a proto2 message missing a required field too
    if len(body) + sum(map(len, head)) > KEY_CHARS:
        return None
    return (*head, type(message), body)


def values_key(values: list[str], dropped: int) -> tuple[Any, ...] | None:
    """The repeat key of a request whose message is not a protobuf message: its values and `dropped`;
    None beyond `KEY_CHARS`."""
    if sum(map(len, values)) > KEY_CHARS:
        return None
    return (*values, dropped)


def keep(kept: dict[tuple[Any, ...], Kept], seen: set[int], key: tuple[Any, ...], X: np.ndarray,
         values: list[str]) -> Kept | None:
    """Keep a request's [1, F] feature row and values the second time its key is seen, and return the
    entry (its outcome is set once scored). The first sighting only notes the key's hash, so a stream
    of new requests keeps nothing (and does not churn the memo)."""
    digest = hash(key)
    if digest not in seen:
        if len(seen) >= SEEN_NOTED:
            seen.clear()
        seen.add(digest)
        return None
    X.flags.writeable = False  # shared from now on by every request with this key
    if len(kept) >= KEPT:
        kept.clear()
    entry = kept[key] = Kept(X, values)
    return entry
