"""HTTP headers to gRPC metadata and back, by grpc-gateway's rules, plus `Grpc-Timeout` parsing.

Inbound (grpc-gateway's `DefaultHeaderMatcher`): `Authorization` is forwarded as `authorization`;
`Grpc-Metadata-<k>` becomes `<k>` (a `-Bin` key is base64-decoded to bytes); the permanent IANA
request headers become `grpcgateway-<k>`; a configured allow-list passes as is; hop-by-hop headers
never pass. The gateway adds `x-forwarded-for`, `x-forwarded-host` and `x-request-id`.
Outbound: response header metadata comes back as `Grpc-Metadata-<k>`, trailers as `Grpc-Trailer-<k>`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from collections.abc import Set as AbstractSet

from translators.errors import BadRequest

METADATA_PREFIX = "grpc-metadata-"
PERMANENT_PREFIX = "grpcgateway-"
# RFC 4229 permanent message headers that grpc-gateway forwards as grpcgateway-<key>.
PERMANENT = frozenset(
    h.lower()
    for h in (
        "Accept", "Accept-Charset", "Accept-Language", "Accept-Ranges", "Authorization", "Cache-Control",
        "Content-Type", "Cookie", "Date", "Expect", "From", "Host", "If-Match", "If-Modified-Since",
        "If-None-Match", "If-Schedule-Tag-Match", "If-Unmodified-Since", "Max-Forwards", "Origin",
        "Pragma", "Referer", "User-Agent", "Via", "Warning",
    )
)
# Their metadata keys, made once: no string built per header per request, and each key's hash is kept.
_PERMANENT_KEYS = {h: PERMANENT_PREFIX + h for h in PERMANENT}
# Connection-level headers (RFC 9110 7.6.1) and the ones HTTP/2 forbids in gRPC metadata.
HOP_BY_HOP = frozenset(
    (
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "transfer-encoding", "upgrade", "content-length",
    )
)
# Reserved by gRPC itself: never forwarded from a client, never echoed back as Grpc-Metadata-*.
_RESERVED = re.compile(r"^(grpc-|:)|^(content-type|user-agent|te)$")
_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}

Metadata = list[tuple[str, str | bytes]]


def to_metadata(
    headers: Iterable[tuple[str, str]], allow: frozenset[str] = frozenset(), hidden: AbstractSet[str] = frozenset()
) -> Metadata:
    """The gRPC metadata a request's headers carry upstream (keys lower-case); `hidden` names (lower
    case: credentials a policy consumed) are never forwarded.

    What becomes of a header depends only on its name and `allow`, so it is worked out once per
    name (`_fate`) and remembered: per header a request then pays one dict lookup, not a lower(),
    two set lookups, a startswith and a table lookup (about 3k instructions a header before)."""
    fates = _FATES.get(allow)
    if fates is None:
        fates = _fates_for(allow)
    get = fates.get
    out: Metadata = []
    for name, value in headers:
        fate = get(name)
        if fate is None:
            fate = _fate(name, allow, fates)
        key, target, kind = fate
        if target is None or key in hidden:
            continue
        if kind == _AS_IS:
            out.append((target, value))
        elif kind == _AUTHORIZATION:
            out.append(("authorization", value))
            out.append((target, value))
        else:
            out.append((target, _b64(value, name)))
    return out


# What a header name becomes: (its lower-case key, the metadata key or None to drop it, how).
_Fate = tuple[str, str | None, int]
_AS_IS, _AUTHORIZATION, _BASE64 = 0, 1, 2  # the value as it is; also as `authorization`; base64-decoded
_FATES: dict[frozenset[str], dict[str, _Fate]] = {}  # per allow-list: header name as sent -> its fate
_NAMES_KEPT = 1024  # names are the client's: a flood of new ones is worked out, not remembered


def _fates_for(allow: frozenset[str]) -> dict[str, _Fate]:
    if len(_FATES) >= 16:  # allow-lists change only with a reload
        _FATES.clear()
    fates = _FATES[allow] = {}
    return fates


def _fate(name: str, allow: frozenset[str], fates: dict[str, _Fate]) -> _Fate:
    """grpc-gateway's rules for one header name (see the module docstring)."""
    key = name.lower()
    fate: _Fate = (key, None, _AS_IS)
    if key in HOP_BY_HOP:
        pass
    elif key.startswith(METADATA_PREFIX):
        inner = key[len(METADATA_PREFIX) :]
        if inner and not _RESERVED.match(inner):
            fate = (key, inner, _BASE64 if inner.endswith("-bin") else _AS_IS)
    elif (permanent := _PERMANENT_KEYS.get(key)) is not None:
        fate = (key, permanent, _AUTHORIZATION if key == "authorization" else _AS_IS)
    elif key in allow:
        fate = (key, key, _AS_IS)
    if len(fates) < _NAMES_KEPT:
        fates[name] = fate
    return fate


def _b64(value: str, name: str) -> bytes:
    try:
        padded = value + "=" * (-len(value) % 4)
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"header {name}: not valid base64", field=name) from None


def response_headers(initial: Iterable[tuple[str, str | bytes]], trailing: Iterable[tuple[str, str | bytes]]) -> list[tuple[str, str]]:
    """`Grpc-Metadata-*` for header metadata and `Grpc-Trailer-*` for trailers."""
    out: list[tuple[str, str]] = []
    if not initial and not trailing:
        return out
    for prefix, pairs in (("Grpc-Metadata-", initial), ("Grpc-Trailer-", trailing)):
        for key, value in pairs or ():
            if _RESERVED.match(key):
                continue
            text = base64.b64encode(value).decode() if isinstance(value, bytes) else value
            out.append((prefix + key, text))
    return out


def parse_grpc_timeout(value: str) -> float:
    """Seconds from a `Grpc-Timeout` header (gRPC over HTTP/2: 1-8 digits and a unit); 400 if malformed."""
    match = _TIMEOUT.match(value.strip())
    if not match:
        raise BadRequest(f"malformed Grpc-Timeout {value!r}", field="Grpc-Timeout")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
