"""What a limit counts by: the client's address behind trusted proxies, and the bucket key.

The client address is the TCP peer, unless that peer is one of `trusted_proxies`: then
`X-Forwarded-For` is read from the right (each proxy appends the address it saw), skipping trusted
proxies, and the first untrusted address is the client. Entries left of it were written by the
client itself and are never believed; if the peer is not trusted the header is ignored entirely,
so nobody outside the proxies can choose their own bucket. If every hop is trusted the left-most
is the client. An entry that is not an address ends the walk at the last trusted hop. Ports
(`1.2.3.4:80`, `[::1]:80`) are dropped and IPv4-mapped IPv6 addresses are read as IPv4.

A bucket key is `<limit name>:<part>|<part>`, one part per element of the limit's `key`:
`c=<consumer>`, `i=<ip>`, `r=<route>`, `g` (global), `h=<hash of the header value>`. Header values
are hashed (they may be credentials and may be long, and they become Redis key names); a request
without a consumer or without the header is counted by its address (`i=`), as Kong does, so
anonymous callers are neither unlimited nor all in one bucket.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> IPAddress | None:
    """An address from a peer or forwarded entry, with any port dropped; None if it is not one."""
    text = text.strip()
    if text.startswith("["):  # [v6]:port
        end = text.find("]")
        text = text[1:end] if end > 0 else text
    elif text.count(":") == 1:  # v4:port (a bare v6 address has at least two colons)
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class TrustedProxies:
    """The proxies whose `X-Forwarded-For` is believed, with a bounded cache of classified hops.

    Parsing an address costs microseconds and the same few proxies and clients recur, so each
    distinct hop text is parsed once (least recently used forgotten past `cache_size`, so a flood
    of forged hops costs parse time, never memory).
    """

    def __init__(self, networks: Sequence[IPNetwork], cache_size: int = 8192) -> None:
        self.networks = tuple(networks)
        self.classify = lru_cache(maxsize=cache_size)(self._classify)

    def _classify(self, text: str) -> tuple[str | None, bool]:
        """(normalised address or None if not one, whether it is a trusted proxy)."""
        addr = parse_address(text)
        if addr is None:
            return None, False
        return str(addr), any(addr.version == net.version and addr in net for net in self.networks)

    def client_address(self, peer: str, forwarded_for: Sequence[str]) -> str:
        """The address to count a request by (see the module docstring for the rules)."""
        peer_addr, peer_trusted = self.classify(peer)
        if peer_addr is None:
            return peer
        if not peer_trusted or not forwarded_for:
            return peer_addr
        nearest = peer_addr
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            hop = hop.strip()
            if not hop:
                continue
            addr, trusted = self.classify(hop)
            if addr is None:
                break
            if not trusted:
                return addr
            nearest = addr
        return nearest


def forwarded_for(headers: Mapping[str, str]) -> list[str]:
    """Every X-Forwarded-For header, in order (a proxy may add a second header instead of appending)."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall("X-Forwarded-For", ()))
    value = headers.get("X-Forwarded-For")
    return [value] if value is not None else []


@dataclass(frozen=True, slots=True)
class KeyPart:
    kind: str  # consumer | ip | route | global | header
    header: str | None = None


def parse_key(spec: str) -> tuple[KeyPart, ...]:
    """`consumer`, `ip`, `route`, `global`, `header:<Name>`, or several joined by `+`."""
    parts = []
    for raw in spec.split("+"):
        raw = raw.strip()
        if raw.startswith("header:"):
            name = raw[len("header:") :].strip()
            if not name or not all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name):
                raise ValueError(f"header key {raw!r} needs a header name, e.g. header:X-Tenant")
            parts.append(KeyPart("header", name))
        elif raw in ("consumer", "ip", "route", "global"):
            parts.append(KeyPart(raw))
        else:
            raise ValueError(f"unknown key {raw!r}: expected consumer, ip, route, global or header:<Name>")
    if len(set(parts)) != len(parts):
        raise ValueError(f"key {spec!r} repeats a part")
    if len(parts) > 1 and KeyPart("global") in parts:
        raise ValueError("key 'global' cannot be combined with other parts")
    return tuple(parts)


def _escape(value: str) -> str:
    return value.replace("%", "%25").replace("|", "%7C")


def _digest(value: str) -> str:
    return hashlib.blake2b(value.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()


def key_part(
    part: KeyPart, consumer: str | None, route: str | None, headers: Mapping[str, str], ip: str
) -> str:
    kind = part.kind
    if kind == "ip":
        return "i=" + ip
    if kind == "consumer":
        if not consumer:
            return "i=" + ip
        return "c=" + _escape(consumer) if len(consumer) <= 128 else "c#" + _digest(consumer)
    if kind == "route":
        return "r=" + _escape(route or "-")
    if kind == "global":
        return "g"
    assert part.header is not None
    value = headers.get(part.header)
    return "h=" + _digest(value) if value else "i=" + ip


class OneKey:
    """The bucket key of a one-part limit, remembered per value, so a request neither formats nor hashes it.

    `name:` plus `key_part(...)`, looked up by the value the part reads (the consumer, the route, the
    header's value) or, when that is missing, by the client address, exactly where `key_part` falls
    back to `i=`. Each table is bounded: at `CACHED_KEYS` it starts over, and a header value longer
    than `CACHED_VALUE_CHARS` is never kept (client-chosen, it could be kilobytes).
    """

    CACHED_KEYS = 4096
    CACHED_VALUE_CHARS = 256

    __slots__ = ("_by_ip", "_global", "by_value", "name", "part")

    def __init__(self, name: str, part: KeyPart) -> None:
        self.name = name
        self.part = part
        # Keys by the value counted (emptied in place, never replaced: the limiter holds it and reads
        # a consumer's key straight from it, without calling this object).
        self.by_value: dict[str, str] = {}
        self._by_ip: dict[str, str] = {}
        self._global = f"{name}:g"

    def __call__(self, consumer: str | None, route: str | None, headers: Mapping[str, str], ip: str) -> str:
        kind = self.part.kind
        if kind == "global":
            return self._global
        if kind == "consumer":
            value = consumer
        elif kind == "route":
            value = route or "-"
        elif kind == "ip":
            value = None
        else:
            value = headers.get(self.part.header)  # type: ignore[arg-type]  # a header part has one
        table, by = (self.by_value, value) if value else (self._by_ip, ip)
        found = table.get(by)
        if found is None:
            found = f"{self.name}:{key_part(self.part, consumer, route, headers, ip)}"
            if len(by) <= self.CACHED_VALUE_CHARS:
                if len(table) >= self.CACHED_KEYS:
                    table.clear()
                table[by] = found
        return found
