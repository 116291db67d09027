"""Transport-neutral request parts and answers: what the REST core reads and what it returns.

The edge's unary REST path (`edge.answer`) takes a `RequestHead` and the body bytes and returns an
`Answer` (status, headers, body); it never sees a socket. Two transports feed it: aiohttp, whose
`web.Request` already has these attributes, and the lean HTTP/1.1 server (`gateway/http1.py`),
which parses the head itself into a `Head`. Policies read the `Call` made from the head, so they
see the same headers, query, path, method and client address whichever transport served it.
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


@dataclass(slots=True)
class Answer:
    """A whole response: status, headers in the order they are sent, body (empty for none)."""

    status: int
    headers: CIMultiDict[str]
    body: bytes
