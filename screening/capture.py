"""Captured traffic: the file format, the redaction and the file itself, for retraining on a deployment's own traffic.

The gateway's `capture` policy (`gateway/policies/capture.py`) samples requests, redacts them here
and appends them here; `portcullis screening train --benign FILE` reads them back here. A line is a
dataset row (`screening.dataset.Row`: `{"r": record, "y": 0, "family": "captured", "source":
"capture", "base", "split": "train"}`) plus the route and the time, so a capture file is also a
valid dataset file.

Redaction happens before anything is written: the values of credential headers (`Authorization`,
`Proxy-Authorization`, `Cookie`, `Set-Cookie`, `X-API-Key`, and any configured), of credential
fields (`password`, `token`, `api_key`, `secret`... and any configured name or key path; names
match anywhere in a body's key path, so `card` redacts `card.number`, and query keys alike; case,
`_` and `-` are ignored, so `api_key` covers `apiKey`), and any value that looks like a bearer or
basic credential or a JWT, are replaced by `[redacted]`. The record keeps its shape (the field is
still there), so the model still learns which fields a route has. This module imports neither the
gateway nor aiohttp; the file I/O is synchronous and meant for a worker thread.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from screening.record import RequestRecord

if TYPE_CHECKING:  # the gateway writes captures: it must not import the training side (dataset, corpus)
    from screening.dataset import Row

REDACTED = "[redacted]"
SOURCE, FAMILY = "capture", "captured"
ALWAYS_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key")
ALWAYS_FIELDS = (
    "password", "passwd", "passphrase", "secret", "client_secret", "token", "access_token", "refresh_token",
    "id_token", "api_key", "apikey", "authorization", "private_key",
)
_CREDENTIAL = re.compile(r"^\s*(bearer|basic|digest|negotiate|token)\s+\S+", re.IGNORECASE)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


def _norm(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def _segments(key_path: str) -> list[str]:
    """`user.cards[].number` -> [user, cards, number]; key leaves (`#`) and odd keys (`?`) drop out."""
    out = []
    for part in key_path.split("."):
        part = part.replace("[]", "").rstrip("#")
        if part and part != "?":
            out.append(_norm(part))
    return out


@dataclass(frozen=True, slots=True)
class Redactor:
    """What to redact; built once from the policy's config, applied to each sampled record."""

    headers: frozenset[str]
    names: frozenset[str]
    paths: tuple[tuple[str, ...], ...]

    @classmethod
    def build(cls, headers: Iterable[str] = (), fields: Iterable[str] = ()) -> Redactor:
        names: set[str] = {_norm(f) for f in ALWAYS_FIELDS}
        paths: list[tuple[str, ...]] = []
        for field in fields:
            segments = _segments(field)
            if not segments:
                raise ValueError(f"redact field {field!r}: expected a name or a key path like user.ssn")
            if len(segments) == 1:
                names.add(segments[0])
            else:
                paths.append(tuple(segments))
        return cls(frozenset(h.lower() for h in (*ALWAYS_HEADERS, *headers)), frozenset(names), tuple(paths))

    def field(self, key_path: str) -> bool:
        segments = _segments(key_path)
        if any(s in self.names for s in segments):
            return True
        return any(tuple(segments[: len(p)]) == p for p in self.paths)

    def value(self, text: str) -> str:
        if _CREDENTIAL.match(text):
            return REDACTED
        return _JWT.sub(REDACTED, text) if "eyJ" in text else text

    def record(self, rec: RequestRecord, hidden_headers: Iterable[str] = (),
               hidden_query: Iterable[str] = ()) -> RequestRecord:
        """`rec` with every credential replaced; `hidden_*` are what auth policies kept from the backend."""
        hidden_h = {h.lower() for h in hidden_headers}
        hidden_q = set(hidden_query)
        headers = tuple((k, REDACTED if k in self.headers or k in hidden_h else self.value(v)) for k, v in rec.headers)
        query = tuple((k, REDACTED if k in hidden_q or self.field(k) else self.value(v)) for k, v in rec.query)
        body = tuple((k, REDACTED if self.field(k) else self.value(v)) for k, v in rec.body)
        messages = tuple((k, REDACTED if self.field(k) else self.value(v)) for k, v in rec.messages)
        return replace(rec, path=_JWT.sub(REDACTED, rec.path) if "eyJ" in rec.path else rec.path, query=query,
                       headers=headers, body=body, messages=messages)


def line(rec: RequestRecord, request_id: str, route: str | None, at: float) -> bytes:
    """One capture line: a benign dataset row, plus where and when it was seen."""
    doc = {"r": rec.to_json(), "y": 0, "family": FAMILY, "source": SOURCE, "base": f"{SOURCE}:{request_id}",
           "split": "train", "route": route, "at": round(at, 3)}  # a `dataset.Row`, plus where and when
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class CaptureFile:
    """An append-only JSON-lines file rotated by size: `path`, `path.1` (newest) ... `path.<backups>`."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = Path(path), max_bytes, backups

    def write(self, lines: list[bytes]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        chunk: list[bytes] = []
        size = self._size()
        for item in lines:
            if chunk and size + len(item) > self.max_bytes:
                self._append(chunk)
                chunk, size = [], self._size()
            if size and size + len(item) > self.max_bytes:
                self.rotate()
                size = 0
            chunk.append(item)
            size += len(item)
        if chunk:
            self._append(chunk)

    def rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.path.exists():
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))

    def files(self) -> list[Path]:
        """This capture's files, oldest first."""
        rotated = [self.path.with_name(f"{self.path.name}.{n}") for n in range(self.backups, 0, -1)]
        return [p for p in (*rotated, self.path) if p.exists()]

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _append(self, chunk: list[bytes]) -> None:
        # One write of whole lines with O_APPEND: a reader never sees half a line from us.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"".join(chunk))
        finally:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class Capture:
    rows: list[Row]
    skipped: int  # lines that were not a record (a torn last line, a stray edit)


def read(path: Path) -> Capture:
    """A capture file (plain or gzipped JSON lines) as benign training rows, source `capture`.

    Every line is taken as benign and as training data, whatever label or split it carries: that is
    what `--benign` means. Lines that are not a record are skipped and counted; a file with no record
    at all raises `ValueError`, naming it.
    """
    from screening.dataset import Row

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[Row] = []
    skipped = 0
    with opener(path, "rt", encoding="utf-8", errors="replace") as lines:  # type: ignore[operator]
        for number, text in enumerate(lines, 1):
            if not text.strip():
                continue
            try:
                doc = json.loads(text)
                fields = doc.get("r", doc)
                if not isinstance(fields, dict) or "path" not in fields:
                    raise ValueError("no record")
                rec = RequestRecord.from_json(fields)
            except (ValueError, TypeError, AttributeError):
                skipped += 1
                continue
            base = doc.get("base") if isinstance(doc.get("base"), str) else f"{SOURCE}:{path.name}:{number}"
            rows.append(Row(rec, 0, FAMILY, SOURCE, base, "train"))
    if not rows:
        raise ValueError(f"{path}: no captured records ({skipped} lines were not records)")
    return Capture(rows, skipped)
