"""W3C Trace Context: `traceparent` and `tracestate` as received, parsed and checked, nothing else.

Pure functions of header values. A `traceparent` is lower-case hex: version, a 32-digit trace id and
a 16-digit parent id that are not all zeros, and flags. Version 00 is exactly 55 characters; a later
version is read by its version-00 prefix, which may only be followed by "-" and more (the spec's
forward-compatibility rule); version ff is invalid. A `tracestate` is the comma-joined list of all its
headers: at most 32 `key=value` members, keys unique, both in the spec's grammar; anything else makes
the whole of it invalid, and an invalid one is dropped rather than forwarded in part.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
_MAX_STATE_MEMBERS = 32
_STATE_KEY = re.compile(r"[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}")
_STATE_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A `traceparent` that parsed: ids as lower-case hex, flags as an int."""

    trace_id: str
    parent_id: str
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)


def parse_traceparent(value: str) -> TraceParent | None:
    """The parent named by one `traceparent` value, or None when it is not valid Trace Context."""
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff":
        return None
    if version == "00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55] != "-":  # a later version may only append "-..." fields
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, int(flags, 16))


def parse_tracestate(values: Sequence[str]) -> str | None:
    """All `tracestate` headers as one canonical list, or None when empty or invalid (it is then dropped)."""
    members = []
    keys = set()
    for value in values:
        for member in value.split(","):
            member = member.strip(" \t")
            if not member:
                continue
            key, eq, item = member.partition("=")
            if not eq or key in keys or not _STATE_KEY.fullmatch(key) or not _STATE_VALUE.fullmatch(item):
                return None
            keys.add(key)
            members.append(member)
    if not members or len(members) > _MAX_STATE_MEMBERS:
        return None
    return ",".join(members)


def header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of a header: a request's `CIMultiDictProxy` keeps repeats, which count here."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, ()))
    value = headers.get(name)
    return [] if value is None else [value]
