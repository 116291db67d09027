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
    case: credentials a policy consumed) are never forwarded."""
    out: Metadata = []
    for name, value in headers:
        key = name.lower()
        if key in HOP_BY_HOP or key in hidden:
            continue
        if key == "authorization":
            out.append(("authorization", value))
        if key.startswith(METADATA_PREFIX):
            inner = key[len(METADATA_PREFIX) :]
            if not inner or _RESERVED.match(inner):
                continue
            if inner.endswith("-bin"):
                out.append((inner, _b64(value, name)))
            else:
                out.append((inner, value))
        elif (permanent := _PERMANENT_KEYS.get(key)) is not None:
            out.append((permanent, value))
        elif key in allow:
            out.append((key, value))
    return out


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
