"""`RequestRecord`: what screening sees of one request, independent of the transport.

A record is built once per request (or per WebSocket message) from already-parsed parts: method,
path, query pairs, a few selected headers, and the leaves of a JSON body or message with their key
paths (`body.user.name`, `body.tags[]`). It is a frozen value, cheap to build and to serialise, and
it is what training data, evaluation data, `explain` and the gateway all hand to the features.

`from_request` is the one way a live request becomes a record: the gateway calls it with the
request message it built (a protobuf message, or JSON bytes or text for a WebSocket frame), and
`portcullis screening explain` calls it with the same message, so both score the same record. Its
body is the message's leaves (`screening.leaves`: walked directly, named as the message's proto3
JSON would name them, so a message and the JSON object it was parsed from give the same leaves).
The policy's fast path, the same values without a record, is `screening.values`.

Work is bounded when a record is made: the leaves' bounds (`MAX_FIELDS`, `MAX_TOTAL_CHARS`, each
value clipped to `MAX_VALUE_CHARS`, head and tail kept) apply to its query and headers too, and what
is left out is counted in `dropped`, itself a feature. The walk and its bounds live in
`screening.leaves` and are re-exported here, where callers have always found them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from screening.leaves import (
    _DIRECT,
    _PLAIN_KEYS,
    _SCALAR,
    MAX_FIELDS,
    MAX_TOTAL_CHARS,
    MAX_VALUE_CHARS,
    _direct_plan,
    _plain_key_cached,
    _text,
    body_leaves,
    clip,
    leaves,
    message_leaves,
)

# What callers import from here, the leaves' bounds and walks among them (moved to `screening.leaves`),
# and the private plans and caches `screening.values` shares with the walk (the same objects).
__all__ = [
    "MAX_FIELDS",
    "MAX_TOTAL_CHARS",
    "MAX_VALUE_CHARS",
    "SCREENED_HEADERS",
    "_DIRECT",
    "_PLAIN_KEYS",
    "_SCALAR",
    "Field",
    "RequestRecord",
    "_direct_plan",
    "_plain_key_cached",
    "_text",
    "_wanted",
    "body_leaves",
    "clip",
    "from_message",
    "from_parts",
    "from_request",
    "leaves",
    "message_leaves",
    "pick_headers",
    "plain_query_key",
    "query_pairs",
]

# Headers worth screening by default: the ones scanners and injection attempts actually use.
SCREENED_HEADERS = ("user-agent", "referer", "x-forwarded-for", "x-api-version", "cookie", "content-type")


class Field(NamedTuple):
    """One screened value: where it came from (`path`, `query`, `header`, `body`, `ws`) and its key.

    A named tuple rather than a dataclass: a request makes one per value, and a tuple is the
    cheapest immutable object Python builds."""

    location: str
    key: str
    value: str

    @property
    def name(self) -> str:
        """`location.key`: the name field allow-lists refer to (`body.comment`, `query.q`)."""
        return f"{self.location}.{self.key}" if self.key else self.location


@dataclass(frozen=True, slots=True)
class RequestRecord:
    method: str = "GET"
    path: str = "/"
    query: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # lower-case names, only the screened ones
    body: tuple[tuple[str, str], ...] = ()  # (key path, leaf value as text)
    messages: tuple[tuple[str, str], ...] = ()  # WebSocket message leaves, same shape as body
    dropped: int = 0  # leaves beyond MAX_FIELDS, not screened

    def fields(self) -> list[Field]:
        """Every screened value, path first; keys are part of the value space (attacks hide in keys)."""
        make = Field._make
        out = [make(("path", "", self.path))]
        out += [make(("query", k, v)) for k, v in self.query]
        out += [make(("header", k, v)) for k, v in self.headers]
        out += [make(("body", k, v)) for k, v in self.body]
        out += [make(("ws", k, v)) for k, v in self.messages]
        return out

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"method": self.method, "path": self.path}
        for name in ("query", "headers", "body", "messages"):
            pairs = getattr(self, name)
            if pairs:
                doc[name] = [list(p) for p in pairs]
        if self.dropped:
            doc["dropped"] = self.dropped
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RequestRecord:
        def pairs(name: str) -> tuple[tuple[str, str], ...]:
            return tuple((str(k), str(v)) for k, v in doc.get(name, ()))

        return cls(
            method=str(doc.get("method", "GET")),
            path=str(doc.get("path", "/")),
            query=pairs("query"),
            headers=pairs("headers"),
            body=pairs("body"),
            messages=pairs("messages"),
            dropped=int(doc.get("dropped", 0)),
        )


def from_parts(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]] = (),
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: Any = None,
    screened_headers: Iterable[str] = SCREENED_HEADERS,
) -> RequestRecord:
    """A record from decoded parts; `body` is a parsed JSON document (or a plain string), or None.

    Training shapes its rows with it; it picks headers and query pairs as `from_request` (the
    gateway's) does, and differs only in taking a parsed document instead of a request message."""
    body_leaves, dropped = leaves(body) if body is not None else ([], 0)
    return RequestRecord(method.upper(), clip(path), query_pairs(query), pick_headers(headers, screened_headers),
                         tuple(body_leaves), (), dropped)


def query_pairs(query: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple([(clip(k), clip(v)) for k, v in query][:MAX_FIELDS])


@lru_cache(maxsize=64)
def _wanted(screened_headers: tuple[str, ...]) -> tuple[tuple[str, ...], frozenset[str]]:
    names = tuple(dict.fromkeys(h.lower() for h in screened_headers))
    return names, frozenset(names)


def pick_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]], screened_headers: Iterable[str] = SCREENED_HEADERS
) -> tuple[tuple[str, str], ...]:
    """The screened headers, lower-cased and clipped, in `screened_headers` order (then request order)."""
    names, wanted = _wanted(tuple(screened_headers))
    getall = getattr(headers, "getall", None)
    if getall is not None:  # a case-insensitive multidict (aiohttp's request headers)
        return tuple([(name, clip(value)) for name in names for value in getall(name, ())])
    items = headers.items() if isinstance(headers, Mapping) else headers
    found = [(k.lower(), v) for k, v in items if k.lower() in wanted]
    order = {name: i for i, name in enumerate(names)}
    found.sort(key=lambda pair: order[pair[0]])
    return tuple((k, clip(v)) for k, v in found)


def plain_query_key(key: str) -> bool:
    """Whether a query key is a plain name (`page`, `sort.by`), not input worth screening on its own."""
    return len(key) <= 64 and key.replace("_", "").replace("-", "").replace(".", "").isalnum()


def from_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]] = (),
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    message: Any = None,
    screened_headers: Iterable[str] = SCREENED_HEADERS,
) -> RequestRecord:
    """The record of a request as the gateway screens it: its decoded path and query, its screened
    headers, and the leaves of its request message (see `body_leaves`). `explain` uses it too."""
    body, dropped = body_leaves(message)
    return RequestRecord(method.upper(), clip(path), query_pairs(query), pick_headers(headers, screened_headers),
                         tuple(body), (), dropped)


def from_message(method: str, path: str, message: Any) -> RequestRecord:
    """The record of one stream or WebSocket message after the first: its leaves (as `ws.<path>`) alone."""
    leaves_, dropped = body_leaves(message)
    return RequestRecord(method.upper(), clip(path), (), (), (), tuple(leaves_), dropped)
