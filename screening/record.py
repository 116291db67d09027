"""`RequestRecord`: what screening sees of one request, independent of the transport.

A record is built once per request (or per WebSocket message) from already-parsed parts: method,
path, query pairs, a few selected headers, and the leaves of a JSON body or message with their key
paths (`body.user.name`, `body.tags[]`). It is a frozen value, cheap to build and to serialise, and
it is what training data, evaluation data, `explain` and the gateway all hand to the features.

Work is bounded when a record is made: at most `MAX_FIELDS` leaves and `MAX_TOTAL_CHARS` of text,
walked iteratively (no recursion limit to hit on a deeply nested body), and each value cut to
`MAX_VALUE_CHARS` (head and tail kept, since an attack can hide after padding). What is left out is
counted in `dropped`, itself a feature.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_FIELDS = 256  # leaves taken from one body or message; the rest are counted, not screened
MAX_VALUE_CHARS = 4096  # per value; longer ones keep their first 3 KiB and last 1 KiB
MAX_TOTAL_CHARS = 32768  # per body or message: what is screened of a large document (the rest is counted)
_HEAD, _TAIL = 3072, 1024
# Headers worth screening by default: the ones scanners and injection attempts actually use.
SCREENED_HEADERS = ("user-agent", "referer", "x-forwarded-for", "x-api-version", "cookie", "content-type")


@dataclass(frozen=True, slots=True)
class Field:
    """One screened value: where it came from (`path`, `query`, `header`, `body`, `ws`) and its key."""

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
        out = [Field("path", "", self.path)]
        out.extend(Field("query", k, v) for k, v in self.query)
        out.extend(Field("header", k, v) for k, v in self.headers)
        out.extend(Field("body", k, v) for k, v in self.body)
        out.extend(Field("ws", k, v) for k, v in self.messages)
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


def clip(value: str) -> str:
    if len(value) <= MAX_VALUE_CHARS:
        return value
    return value[:_HEAD] + " " + value[-_TAIL:]


def leaves(document: Any, prefix: str = "", limit: int = MAX_FIELDS) -> tuple[list[tuple[str, str]], int]:
    """(key path, text) for every scalar leaf of a JSON document, and how many were left out.

    Object keys are leaves too (as `path.key#`), since a key can carry a payload just as a value can
    (`{"$where": ...}`, `{"<script>": 1}`). Iterative, depth-first, at most `limit` leaves.
    """
    out: list[tuple[str, str]] = []
    dropped = 0
    budget = MAX_TOTAL_CHARS
    stack: list[tuple[str, Any]] = [(prefix, document)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            items = list(node.items())
            for key, value in reversed(items):
                key_text = str(key)
                child = f"{path}.{key_text}" if path else key_text
                if not _plain_key(key_text):
                    if len(out) < limit:
                        out.append((f"{path}#" if path else "#", clip(key_text)))
                    else:
                        dropped += 1
                stack.append((child if _plain_key(key_text) else f"{path}.?" if path else "?", value))
        elif isinstance(node, list):
            child = f"{path}[]"
            stack.extend((child, item) for item in reversed(node))
        else:
            if len(out) < limit and budget > 0:
                text = clip(_text(node))[:budget]
                budget -= len(text)
                out.append((path, text))
            else:
                dropped += 1
    return out, dropped


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


def from_parts(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]] = (),
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: Any = None,
    screened_headers: Iterable[str] = SCREENED_HEADERS,
) -> RequestRecord:
    """A record from decoded parts; `body` is a parsed JSON document (or a plain string), or None."""
    wanted = {h.lower() for h in screened_headers}
    items = headers.items() if isinstance(headers, Mapping) else headers
    picked = tuple((k.lower(), clip(v)) for k, v in items if k.lower() in wanted)
    body_leaves: list[tuple[str, str]] = []
    dropped = 0
    if body is not None:
        body_leaves, dropped = leaves(body)
    query_pairs = tuple((clip(k), clip(v)) for k, v in query)[:MAX_FIELDS]
    return RequestRecord(method.upper(), clip(path), query_pairs, picked, tuple(body_leaves), (), dropped)
