"""The leaves of a request document: (key path, text) pairs, walked within bounds, for `RequestRecord`.

A record (`screening.record`) holds a body or WebSocket message as its leaves: every scalar with its
key path (`user.name`, `tags[]`), and odd object keys as leaves of their own (`user#`), since a key
can carry a payload. This module walks a document into those leaves: `leaves` a parsed JSON
document (training and `from_parts`), `message_leaves` one that may hold protobuf messages, walked
directly and named as the message's proto3 JSON would be (`labels.user`, enums by name), and
`body_leaves` whatever the gateway hands screening (a message, JSON bytes or text). It owns the
bounds of that work and the per-descriptor plans of the message walk: at most `MAX_FIELDS` leaves and
`MAX_TOTAL_CHARS` of text, walked iteratively (no recursion limit to hit on a deeply nested body),
each value cut to `MAX_VALUE_CHARS` by `clip` (head and tail kept, since an attack can hide after
padding), what is left out counted in `dropped`. It is on the request path of every screened
request with a body (through `record.from_request`, or `values.request_values` for a message that
is not flat) and imports neither `gateway` nor aiohttp.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

MAX_FIELDS = 256  # leaves taken from one body or message; the rest are counted, not screened
MAX_VALUE_CHARS = 4096  # per value; longer ones keep their first 3 KiB and last 1 KiB
MAX_TOTAL_CHARS = 32768  # per body or message: what is screened of a large document (the rest is counted)
_HEAD, _TAIL = 3072, 1024


def clip(value: str) -> str:
    if len(value) <= MAX_VALUE_CHARS:
        return value
    return value[:_HEAD] + " " + value[-_TAIL:]


def leaves(document: Any, prefix: str = "", limit: int = MAX_FIELDS) -> tuple[list[tuple[str, str]], int]:
    """(key path, text) for every scalar leaf of a JSON document, and how many were left out.

    Object keys are leaves too (as `path.key#`), since a key can carry a payload just as a value can
    (`{"$where": ...}`, `{"<script>": 1}`). Iterative, depth-first, at most `limit` leaves: the walk is
    `message_leaves`', whose dict, list and scalar branches are all a JSON document takes.
    """
    return message_leaves(document, prefix, limit)


def _plain_key(key: str) -> bool:
    # A key like `user_name` or `createdAt` is a name, not input worth its own screening.
    return len(key) <= 64 and key.replace("_", "").replace("-", "").isalnum()


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value if isinstance(value, str) else str(value)


# --- the serving path: a request message walked directly -------------------------------------------------
_SCALAR, _ENUM, _BYTES, _MESSAGE, _MAP, _JSON = range(6)
_KINDS: dict[FieldDescriptor, tuple[int, bool, Any, int]] = {}
_KINDS_MAX = 8192  # descriptors are finite, but a reloaded descriptor pool brings new ones


def _kind(field: FieldDescriptor) -> tuple[int, bool, Any, int]:
    """(kind, repeated, map value field, map value kind) of a field, computed once per descriptor."""
    found = _KINDS.get(field)
    if found is not None:
        return found
    repeated = bool(field.is_repeated)
    message_type = field.message_type
    value_field: Any = None
    value_kind = _SCALAR
    if message_type is not None and message_type.GetOptions().map_entry:
        kind, repeated = _MAP, False
        value_field = message_type.fields_by_name["value"]
        value_kind = _kind(value_field)[0]
    elif message_type is not None:
        # Well-known types (Struct, Timestamp, wrappers...) have a JSON form of their own.
        kind = _JSON if message_type.full_name.startswith("google.protobuf.") else _MESSAGE
    elif field.type == FieldDescriptor.TYPE_ENUM:
        kind = _ENUM
    elif field.type == FieldDescriptor.TYPE_BYTES:
        kind = _BYTES
    else:
        kind = _SCALAR
    if len(_KINDS) >= _KINDS_MAX:
        _KINDS.clear()
    found = _KINDS[field] = (kind, repeated, value_field, value_kind)
    return found


_DIRECT: dict[FieldDescriptor, tuple[int, str, bool] | tuple[()]] = {}


def _direct_plan(field: FieldDescriptor) -> tuple[int, str, bool] | tuple[()]:
    """(kind, name, whether a map's values are strings) of a field `message_leaves` turns into leaves at
    once (a singular scalar, a map of scalars), or () for one that goes on its stack; computed once per
    descriptor."""
    kind, repeated, value_field, value_kind = _kind(field)
    plan: tuple[int, str, bool] | tuple[()] = ()
    if not repeated and (kind == _SCALAR or kind == _MAP and value_kind == _SCALAR):
        strings = kind == _MAP and value_field.type == FieldDescriptor.TYPE_STRING
        plan = (kind, field.name, strings)
    if len(_DIRECT) >= _KINDS_MAX:
        _DIRECT.clear()
    _DIRECT[field] = plan
    return plan


def remembered(test: Callable[[str], bool], table: dict[str, bool]) -> Callable[[str], bool]:
    """`test`, remembered in `table` for keys of at most 64 characters (names repeat from request to
    request; a longer one is a payload, tested each time), at most 4,096 of them (emptied when full). The
    caller keeps `table` to read it directly where a look-up alone is cheaper than a call."""

    def cached(key: str) -> bool:
        found = table.get(key)
        if found is None:
            found = test(key)
            if len(key) <= 64:
                if len(table) >= 4096:
                    table.clear()
                table[key] = found
        return found

    return cached


_PLAIN_KEYS: dict[str, bool] = {}
_plain_key_cached = remembered(_plain_key, _PLAIN_KEYS)  # map keys and JSON names


def _convert(field: FieldDescriptor, kind: int, value: Any) -> Any:
    """A protobuf field value as the walker's node: messages stay messages, the rest become JSON-like."""
    if kind == _ENUM:
        named = field.enum_type.values_by_number.get(value)
        return named.name if named is not None else value
    if kind == _BYTES:
        return bytes(value[:MAX_VALUE_CHARS]).decode("utf-8", "replace")
    if kind == _JSON:
        return json_format.MessageToDict(value, preserving_proto_field_name=True)
    return value


def message_leaves(document: Any, prefix: str = "", limit: int = MAX_FIELDS) -> tuple[list[tuple[str, str]], int]:
    """`leaves` of a document that may hold protobuf messages, walked directly (no dict made first).

    A message gives the leaves its proto3 JSON object would (set fields only, map keys as object
    keys, enums by name), in field order.
    """
    out: list[tuple[str, str]] = []
    dropped = 0
    budget = MAX_TOTAL_CHARS
    stack: list[tuple[str, Any]] = [(prefix, document)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, Message):
            fields = node.ListFields()
            # Leading singular scalars and maps of scalars with plain keys make leaves right away, in field order, as
            # if pushed and popped at once; from the first other field on, the rest go on the stack.
            direct = 0
            for field, value in fields:
                plan = _DIRECT.get(field)
                if plan is None:
                    plan = _direct_plan(field)
                if not plan:
                    break
                child = f"{path}.{plan[1]}" if path else plan[1]
                if plan[0] == _SCALAR:
                    keyed = [(child, value)]
                else:
                    items = list(value.items())
                    keyed = [(f"{child}.{key}", item) for key, item in items if _plain_key_cached(str(key))]
                    if len(keyed) < len(items):  # an odd key: this map and the rest go on the stack (the dict walk)
                        break
                direct += 1
                for leaf_path, item in keyed:
                    if len(out) < limit and budget > 0:
                        text = item if type(item) is str and len(item) <= MAX_VALUE_CHARS else clip(_text(item))
                        text = text[:budget]
                        budget -= len(text)
                        out.append((leaf_path, text))
                    else:
                        dropped += 1
            for field, value in reversed(fields[direct:]):
                kind, repeated, value_field, value_kind = _kind(field)
                name = field.name
                child = f"{path}.{name}" if path else name
                if kind == _MAP:
                    if value_kind == _SCALAR:
                        stack.append((child, dict(value.items())))
                    else:
                        stack.append((child, {k: _convert(value_field, value_kind, v) for k, v in value.items()}))
                elif kind == _SCALAR or kind == _MESSAGE:
                    stack.append((child, list(value) if repeated else value))
                elif repeated:
                    stack.append((child, [_convert(field, kind, v) for v in value]))
                else:
                    stack.append((child, _convert(field, kind, value)))
        elif isinstance(node, dict):
            for key, value in reversed(list(node.items())):
                key_text = str(key)
                if _plain_key(key_text):
                    stack.append((f"{path}.{key_text}" if path else key_text, value))
                    continue
                if len(out) < limit:
                    out.append((f"{path}#" if path else "#", clip(key_text)))
                else:
                    dropped += 1
                stack.append((f"{path}.?" if path else "?", value))
        elif isinstance(node, list):
            child = f"{path}[]"
            stack.extend((child, item) for item in reversed(node))
        elif len(out) < limit and budget > 0:
            text = clip(_text(node))[:budget]
            budget -= len(text)
            out.append((path, text))
        else:
            dropped += 1
    return out, dropped


def body_leaves(message: Any) -> tuple[list[tuple[str, str]], int]:
    """The leaves of a request message: a protobuf message, JSON bytes or text (else plain text), a
    parsed JSON document, or None."""
    if message is None:
        return [], 0
    if isinstance(message, bytes | bytearray | memoryview):
        raw = bytes(message)
        if not raw:
            return [], 0
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            message = raw[: MAX_VALUE_CHARS * 2].decode("utf-8", "replace")
    elif isinstance(message, str):
        try:
            message = orjson.loads(message)
        except orjson.JSONDecodeError:
            pass
    return message_leaves(message)
