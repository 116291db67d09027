"""Shaping: a payload or a benign text becomes a `RequestRecord` for one of the demo routes.

Benign and attack samples go through the same shapes with the same probabilities (route, field,
headers, encodings), so nothing but the content tells them apart: a model cannot learn that attacks
come as query parameters or that benign text never arrives URL-encoded. The other fields of a
record are filled with realistic benign values, so the model must find the one field that carries
the payload.
"""

from __future__ import annotations

import base64
import html
import random
import urllib.parse
from collections.abc import Callable

from screening.corpus import Sample
from screening.record import RequestRecord, from_parts

Fill = Callable[[random.Random], str]
USER_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
    "curl/7.88.1", "python-requests/2.31.0", "okhttp/4.12.0", "Go-http-client/1.1", "PostmanRuntime/7.36.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "axios/1.6.2", "node-fetch/1.0", "Apache-HttpClient/4.5.14 (Java/17.0.9)",
)


def _id(rng: random.Random) -> str:
    return rng.choice((str(rng.randint(1, 99999)), f"item-{rng.randint(1, 999)}", f"{rng.getrandbits(32):08x}"))


def _encode(text: str, rng: random.Random, attack: bool) -> str:
    """Encodings clients and attackers both use; attacks get evasions benign text never needs."""
    roll = rng.random()
    if roll < 0.06:
        return urllib.parse.quote(text, safe="")
    if roll < 0.08:
        return urllib.parse.quote_plus(text)
    if roll < 0.10:
        return html.escape(text)
    if not attack:
        return text
    if roll < 0.16:
        return urllib.parse.quote(urllib.parse.quote(text, safe=""), safe="")
    if roll < 0.22:
        return "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in text)
    if roll < 0.26:
        return text.replace(" ", "/**/")
    if roll < 0.29:
        return "".join(f"&#{ord(ch)};" if not ch.isalnum() and rng.random() < 0.7 else ch for ch in text)
    if roll < 0.32:
        return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" and rng.random() < 0.5 else ch for ch in text)
    if roll < 0.34:
        return base64.b64encode(text.encode()).decode()
    if roll < 0.38:
        return text.replace(" ", rng.choice(("\t", "%09", "+", "%20", "\n")))
    return text


def shape(sample: Sample, rng: random.Random, fill: Fill) -> RequestRecord:
    """One record carrying `sample.text` in a field chosen like a client would put it there."""
    attack = sample.label == 1
    payload = _encode(sample.text, rng, attack)
    agent = rng.choice(USER_AGENTS)
    headers = {"User-Agent": agent}
    location = sample.location
    if location == "any":
        location = rng.choices(("body", "query", "path", "header"), weights=(50, 30, 12, 8))[0]
    if location == "header":
        name = rng.choice(("User-Agent", "User-Agent", "Referer", "X-Forwarded-For", "Cookie"))
        headers[name] = payload if name != "Cookie" else f"session={payload}"
        return _route(rng, fill, headers, None)
    if location == "path":
        if sample.text.startswith("/") and not attack or sample.family == "scanner":
            return from_parts("GET", payload if payload.startswith("/") else "/" + payload, (), headers)
        return from_parts("GET", f"/v1/items/{payload}", [("verbose", "true")] if rng.random() < 0.3 else [], headers)
    if location == "key":
        body = {"query": {"title": {payload: rng.choice(("", "1", None))}} if rng.random() < 0.5 else payload}
        headers["Content-Type"] = "application/json"
        return from_parts("POST", "/v1/books:search", (), headers, body)
    return _route(rng, fill, headers, payload, location)


def _route(rng: random.Random, fill: Fill, headers: dict[str, str], payload: str | None,
           location: str = "body") -> RequestRecord:
    """A random demo route with realistic benign values, `payload` (if any) in one of its fields."""
    value = payload if payload is not None else fill(rng)
    in_query = location == "query"
    choice = rng.randrange(7)
    if in_query or choice < 2:
        path, key = rng.choice((("/v1/items:stream", "prefix"), ("/v1/shelves/1/books", "tags"),
                                ("/v1/shelves", "filter"), ("/v1/items/" + _id(rng), "q")))
        query = [(key, value)] if in_query or payload is None else [(key, fill(rng))]
        if rng.random() < 0.4:
            query.append((rng.choice(("page_size", "count", "genre")), rng.choice(("10", "3", "NONFICTION"))))
        if not in_query and payload is not None:
            query[0] = (key, payload)
        return from_parts("GET", path, query, headers)
    headers["Content-Type"] = "application/json"
    if choice == 2:
        body: object = {"message": value, "repeat": rng.randint(1, 3), "labels": {"lang": rng.choice(("en", "fr"))}}
        return from_parts("POST", "/v1/echo", (), headers, body)
    if choice == 3:
        return from_parts("POST", "/v1/shelves", (), headers, {"theme": value})
    if choice == 4:
        book = {"title": fill(rng), "author": fill(rng), "genre": "FICTION", "pageCount": str(rng.randint(50, 900)),
                "tags": [fill(rng)]}
        field = rng.choice(("title", "author", "tags", "description"))
        book[field] = [value] if field == "tags" else value
        return from_parts("POST", f"/v1/shelves/{rng.randint(1, 9)}/books", (), headers, book)
    if choice == 5:
        return from_parts("POST", f"/v1/shelves/1/books/{rng.randint(1, 99)}:publish", (), headers, {"note": value})
    return from_parts("PATCH", f"/v1/shelves/1/books/{rng.randint(1, 99)}", [("update_mask", "title")], headers,
                      {"title": value, "tags": [fill(rng), fill(rng)]})
