"""`request_values`: the screened values of a request, without building its `RequestRecord`.

The screening policy's fast path (`gateway.policies.screening`, in `on_message`, for a route without
field rules, the common case): the same values, in the same order, and the same `dropped` count as
`features.field_values(record.from_request(...))` and the record's `dropped`, but without the record,
its key paths or its pairs. It owns the per-process caches that make that one pass: which query keys
are plain, and per screened-header list a plan (names, ranks per spelling, positions per sequence of
request header names). A flat protobuf message (singular scalars and maps of scalars with plain keys,
within the record's bounds) is read field by field; anything else goes through `record.body_leaves`.
The limits, clipping and message plans are the record's (`screening.record`, their code in
`screening.leaves`), imported, not copied. Tests hold the two paths equal. It comes in two parts,
`head_values` (path, query, screened headers) and `add_message_values` (the message's values and
`dropped`, a function of the message alone): the policy's repeat memo keys a protobuf request on the
first part and the message's serialized bytes, and walks the message only when that key is new.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.message import Message

from screening import record
from screening.leaves import remembered
from screening.record import (
    _SCALAR,
    MAX_FIELDS,
    MAX_TOTAL_CHARS,
    MAX_VALUE_CHARS,
    SCREENED_HEADERS,
    _direct_plan,
    _plain_key_cached,
    _text,
    _wanted,
    body_leaves,
    clip,
    plain_query_key,
)

# The record's caches, the same dicts (cleared in place, never rebound). Bound by assignment, not by
# `from ... import`: CPython compiles a method call on an imported name as a module attribute load (no
# LOAD_METHOD), which would make `_DIRECT.get(field)` build a bound method per field.
_DIRECT = record._DIRECT
_PLAIN_KEYS = record._PLAIN_KEYS

_QUERY_KEYS: dict[str, bool] = {}  # query key -> whether it is plain (not screened on its own)
_query_key_is_plain = remembered(plain_query_key, _QUERY_KEYS)
# Per screened-header list: its lower-case names, and a header name as a request spells it -> its rank there.
# And a request's header names, in order -> the positions of the screened ones in screened order.
_HeaderPlan = tuple[tuple[str, ...], dict[str, int], dict[tuple[str, ...], tuple[int, ...]]]
_HEADER_RANKS: dict[tuple[str, ...], _HeaderPlan] = {}
# The screened-header list used last and its plan: a route's config hands the same tuple on every request,
# and an identity check costs less than hashing the tuple for the look-up (the tuple is held, so its id
# cannot be reused by another).
_LAST_PLAN: list[Any] = [None, None]


def _header_rank(ranks: dict[str, int], names: tuple[str, ...], name: str) -> int:
    """Where header `name` (as the request spells it) comes in `names`, or -1; remembered per spelling."""
    lowered = name.lower()
    rank = names.index(lowered) if lowered in names else -1
    if len(name) <= 64:
        if len(ranks) >= 1024:
            ranks.clear()
        ranks[name] = rank
    return rank


def _flat_message_values(message: Message) -> list[str] | None:
    """The leaf values of a message whose set fields are all singular scalars or maps of scalars with plain
    keys, within `MAX_FIELDS` and `MAX_TOTAL_CHARS`: `message_leaves`' values, without their key paths.
    None for any other message (it then goes through `message_leaves`)."""
    out: list[str] = []
    budget = MAX_TOTAL_CHARS
    for field, value in message.ListFields():
        plan = _DIRECT.get(field)
        if plan is None:
            plan = _direct_plan(field)
        if not plan:
            return None
        if plan[0] == _SCALAR:
            kind = type(value)
            if kind is str:
                text = value if len(value) <= MAX_VALUE_CHARS else clip(value)
            elif kind is int:  # `_text`'s str(), and never clipped: a protobuf integer has at most 20 digits
                text = str(value)
            else:
                text = clip(_text(value))
            if len(text) >= budget or len(out) >= MAX_FIELDS:
                return None  # the walk would cut or drop it
            budget -= len(text)
            out.append(text)
            continue
        keys = list(value)  # a map's keys, in its iteration order (its `items()` is a Python view over them)
        if not all(map(_PLAIN_KEYS.get, keys)) and not all(_plain_key_cached(str(key)) for key in keys):
            return None  # an odd key is a leaf of its own
        items = list(map(value.__getitem__, keys))
        if plan[2] and items:  # strings: taken whole when none is clipped and all fit (the usual labels)
            size = sum(map(len, items))  # a total within one value's limit needs no look at each
            if size < budget and len(out) + len(items) <= MAX_FIELDS and (
                size <= MAX_VALUE_CHARS or max(map(len, items)) <= MAX_VALUE_CHARS
            ):
                budget -= size
                out += items
                continue
        for item in items:
            if type(item) is not str or len(item) > MAX_VALUE_CHARS:
                item = clip(_text(item))
            if len(item) >= budget or len(out) >= MAX_FIELDS:
                return None
            budget -= len(item)
            out.append(item)
    return out


def request_values(
    path: str,
    query: Iterable[tuple[str, str]] = (),
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    message: Any = None,
    screened_headers: tuple[str, ...] = SCREENED_HEADERS,
) -> tuple[list[str], int]:
    """The values screened for a request and how many leaves were left out: what
    `features.field_values(from_request(...))` and the record's `dropped` give, without the record, the
    key paths or the pairs (the gateway's common case: a route without field rules). Tests hold the two
    equal; the work is one pass over the query and the headers and, for a flat message (the usual
    request: scalars and maps of scalars), one over its fields.

    The head's values come first (`head_values`), then the message's (`add_message_values`): the
    message's part and `dropped` depend on the message alone, which the policy's repeat memo relies on
    (`gateway.policies.screening.kept_rows`)."""
    values = head_values(path, query, headers, screened_headers)
    return values, add_message_values(values, message)


def head_values(
    path: str,
    query: Iterable[tuple[str, str]] = (),
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    screened_headers: tuple[str, ...] = SCREENED_HEADERS,
) -> list[str]:
    """The screened values of a request's head, in `request_values`' order: the path, the query's values
    (and odd keys), the screened headers' values. Nothing of the head is ever dropped."""
    if type(screened_headers) is not tuple:
        screened_headers = tuple(screened_headers)
    values = [path if len(path) <= MAX_VALUE_CHARS else clip(path)]
    for taken, (key, value) in enumerate(query):
        if taken == MAX_FIELDS:
            break
        values.append(value if len(value) <= MAX_VALUE_CHARS else clip(value))
        if len(key) > MAX_VALUE_CHARS:
            key = clip(key)
        if not _query_key_is_plain(key):
            values.append(key)
    last = _LAST_PLAN
    if last[0] is screened_headers:
        plan: _HeaderPlan = last[1]
    else:
        plan = _HEADER_RANKS.get(screened_headers) or _header_plan(screened_headers)
        last[0], last[1] = screened_headers, plan
    keys = getattr(headers, "keys", None)  # a mapping or multidict; else an iterable of pairs
    spelled = tuple(keys()) if keys is not None else ()
    if spelled and len(spelled) == len(headers):  # type: ignore[arg-type]
        # No name given twice (a multidict's keys() lists each name once), so keys() and values() align.
        # Requests from one kind of client send the same header names in the same order: which of them
        # are screened, in screened order, is worked out once per such sequence.
        positions = plan[2].get(spelled)
        if positions is None:
            positions = _header_positions(plan, spelled)
        if positions:
            given = list(headers.values())  # type: ignore[union-attr]
            for i in positions:  # a loop, not a comprehension: no frame for the usual two or three
                value = given[i]
                values.append(value if len(value) <= MAX_VALUE_CHARS else clip(value))
    else:
        names, ranks, _ = plan
        found: list[tuple[int, str]] = []
        pairs: Iterable[tuple[str, str]] = headers.items() if keys is not None else headers  # type: ignore[union-attr,assignment]
        for name, value in pairs:
            rank = ranks.get(name)
            if rank is None:
                rank = _header_rank(ranks, names, name)
            if rank >= 0:
                found.append((rank, value))
        if found:
            found.sort(key=_first)  # stable: screened order, then request order
            values += [value if len(value) <= MAX_VALUE_CHARS else clip(value) for _, value in found]
    return values


def add_message_values(values: list[str], message: Any) -> int:
    """Append a request message's screened values to `values` (its head's) and return how many of its
    leaves were left out. A pure function of the message (for a protobuf message: of its set fields and
    its maps' iteration order)."""
    if message is None:
        return 0
    if isinstance(message, Message):
        flat = _flat_message_values(message)
        if flat is not None:
            values += flat
            return 0
    leaves_, dropped = body_leaves(message)
    values += [value for _, value in leaves_]
    return dropped


def _first(pair: tuple[int, str]) -> int:
    return pair[0]


def _header_plan(screened_headers: tuple[str, ...]) -> _HeaderPlan:
    if len(_HEADER_RANKS) >= 64:
        _HEADER_RANKS.clear()
    plan = _HEADER_RANKS[screened_headers] = (_wanted(tuple(screened_headers))[0], {}, {})
    return plan


def _header_positions(plan: _HeaderPlan, spelled: tuple[str, ...]) -> tuple[int, ...]:
    """The positions in a request's header names of the screened ones, in screened order, then request
    order; remembered per sequence of names."""
    names, ranks, by_names = plan
    found = []
    for i, name in enumerate(spelled):
        rank = ranks.get(name)
        if rank is None:
            rank = _header_rank(ranks, names, name)
        if rank >= 0:
            found.append((rank, i))
    found.sort()  # (rank, position): screened order, then request order
    positions = tuple(i for _, i in found)
    if len(spelled) <= 64:
        if len(by_names) >= 1024:
            by_names.clear()
        by_names[spelled] = positions
    return positions
