"""Transport-neutral request parts and answers: what the REST core reads and what it returns.

The edge's unary REST path (`edge.answer`) takes a `RequestHead` and the body bytes and returns an
`Answer` (status, headers, body); it never sees a socket. Two transports feed it: aiohttp, whose
`web.Request` already has these attributes, and the lean HTTP/1.1 server (`gateway/http1.py`),
which parses the head itself into a `Head`. Policies read the `Call` made from the head, so they
see the same headers, query, path, method and client address whichever transport served it.

A `HeaderBlock` is a set of response headers a policy adds unchanged to many responses (the
rate limiter's full-bucket trio), checked and rendered once at start-up, so that an answer can
carry it as one string instead of its fields merged into the answer's headers and rendered again
per response.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from multidict import CIMultiDict


class RequestHead(Protocol):
    """What the REST core reads of a request (aiohttp's `web.Request` has all of it)."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...  # decoded

    @property
    def raw_path(self) -> str: ...  # as sent: path and query, still encoded

    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive

    @property
    def query(self) -> Mapping[str, str]: ...  # a multidict: `items()` gives repeated keys

    @property
    def remote(self) -> str | None: ...

    @property
    def host(self) -> str: ...


@dataclass(slots=True)
class Head:
    """A request head parsed by the lean HTTP/1.1 server."""

    method: str
    path: str
    raw_path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    remote: str | None
    host: str


# Names a block may not carry: the ones aiohttp writes or reads itself (Content-Type decides its
# default), and those a unary reply's own headers hold (its metadata and X-Request-Id), so that a
# block's names are never among the headers of the answer it rides on.
_NOT_IN_BLOCK = frozenset(("content-length", "content-type", "date", "server", "connection", "x-request-id"))
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """Response headers fixed at start-up: `fields` (never mutated) and `lines`, the same fields
    rendered as aiohttp renders them ("Name: value" joined by CRLF, none after the last), checked
    once for what aiohttp would refuse."""

    fields: dict[str, str]
    lines: str

    @staticmethod
    def of(fields: dict[str, str]) -> HeaderBlock:
        for name, value in fields.items():
            if not name or not _TOKEN.issuperset(name) or name.lower() in _NOT_IN_BLOCK:
                raise ValueError(f"header {name!r} cannot be in a header block")
            if name.lower().startswith("grpc-"):
                raise ValueError(f"header {name!r} cannot be in a header block (a reply's metadata)")
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} holds a line break")
        if not fields:
            raise ValueError("a header block holds at least one field")
        return HeaderBlock(dict(fields), "\r\n".join(f"{n}: {v}" for n, v in fields.items()))


@dataclass(slots=True)
class Answer:
    """A whole response: status, headers in the order they are sent, body (empty for none), and
    a header block sent after the headers, none of whose names they hold (None for none)."""

    status: int
    headers: CIMultiDict[str]
    body: bytes
    block: HeaderBlock | None = None
