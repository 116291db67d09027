"""HPACK for a gRPC client: cheap request header blocks out, a caching decoder for responses in.

Encoding never touches a dynamic table: the fixed part of a request's block (`:method`, `:scheme`,
`:path`, `:authority`, `content-type`, `te`, `user-agent`) is built once per (connection target, rpc
path) from static-table references and literals "without indexing", and each request appends its
`grpc-timeout` and metadata as more such literals, without Huffman: a bytes concatenation. So the
encoder keeps no state and any header block may be written in any order.

Decoding is stateful (RFC 7541 dynamic table), one `HeaderDecoder` per connection, fed every header
block in the order the frames arrived. It counts table changes in `mutations` so that a caller can
cache what a block means: a block that leaves the table alone decodes the same way until the next
change, and a backend answers with the same few blocks again and again.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Iterable

from gateway.upstreams import huffman

Field = tuple[str, str]

# RFC 7541 Appendix A.
STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
)
_STATIC_LEN = len(STATIC_TABLE)
_ENTRY_OVERHEAD = 32  # RFC 7541 4.1
DEFAULT_TABLE_SIZE = 4096
USER_AGENT = "portcullis-h2/0.1"


class HeaderError(ValueError):
    """A header block that does not decode: a connection error (COMPRESSION_ERROR) for HTTP/2."""


# ---- encoding ---------------------------------------------------------------------------------------


def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """RFC 7541 5.1 integer with an N-bit prefix; `first` holds the pattern bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SHORT_LENGTH = tuple(bytes((n,)) for n in range(127))


def _string(data: bytes) -> bytes:
    """A raw (not Huffman) string literal: 7-bit-prefix length, then the octets."""
    n = len(data)
    return (_SHORT_LENGTH[n] if n < 127 else _integer(n, 7)) + data


def literal(name: bytes, value: bytes) -> bytes:
    """ "Literal header field without indexing, new name" (RFC 7541 6.2.2), no Huffman."""
    return b"\x00" + _string(name) + _string(value)


def literal_indexed_name(index: int, value: bytes) -> bytes:
    """ "Literal header field without indexing, indexed name": the name from the static table."""
    return _integer(index, 4) + _string(value)


def indexed(index: int) -> bytes:
    """ "Indexed header field" (RFC 7541 6.1): a whole static-table entry in one or two octets."""
    return _integer(index, 7, 0x80)


def request_prefix(scheme: str, authority: str, path: str, user_agent: str = USER_AGENT) -> bytes:
    """The fixed part of every request block to `path`: build it once and reuse it."""
    return b"".join(
        (
            indexed(3),  # :method POST
            indexed(7 if scheme == "https" else 6),  # :scheme https / http
            literal_indexed_name(4, path.encode()),  # :path
            literal_indexed_name(1, authority.encode()),  # :authority
            literal_indexed_name(31, b"application/grpc"),  # content-type
            literal(b"te", b"trailers"),
            literal_indexed_name(58, user_agent.encode()),  # user-agent
        )
    )


_NAMES: dict[str, bytes] = {}
# Whole encoded fields of text metadata, by (key, value): most of a request's metadata repeats from
# one request to the next (x-forwarded-host, x-forwarded-for, forwarded headers); a unique value (a
# request id) costs one insert, and the cache is emptied when full so such values cannot crowd it.
_FIELDS: dict[tuple[str, str | bytes], bytes] = {}
_FIELDS_MAX = 4096


def metadata_block(metadata: Iterable[tuple[str, str | bytes]]) -> bytes:
    """Request metadata as literals; `-bin` values go out base64-encoded without padding (gRPC spec)."""
    get = _FIELDS.get
    # The (key, value) pair itself is the cache key; an encoded field is never empty, so `or` only
    # falls through on a miss.
    return b"".join([get(item) or _cached_field(item) for item in metadata])


def _cached_field(item: tuple[str, str | bytes]) -> bytes:
    key, value = item
    if not isinstance(value, str) or key.endswith("-bin"):  # binary values are not kept
        return _field(key, value)
    # `_field` for text, inline: a unique value (a request id) misses on every request.
    name = _NAMES.get(key) or _name(key)
    data = value.encode()
    n = len(data)
    field = name + (_SHORT_LENGTH[n] if n < 127 else _integer(n, 7)) + data
    if len(_FIELDS) >= _FIELDS_MAX:
        _FIELDS.clear()
    _FIELDS[item] = field
    return field


def _name(key: str) -> bytes:
    name = b"\x00" + _string(key.encode())
    if len(_NAMES) < 1024:  # keys repeat; a flood of distinct ones must not grow this forever
        _NAMES[key] = name
    return name


def _field(key: str, value: str | bytes) -> bytes:
    name = _NAMES.get(key) or _name(key)
    if key.endswith("-bin"):
        raw = value if isinstance(value, bytes) else value.encode()
        data = base64.b64encode(raw).rstrip(b"=")
    else:
        data = value.encode() if isinstance(value, str) else value
    n = len(data)
    return name + (_SHORT_LENGTH[n] if n < 127 else _integer(n, 7)) + data


# ---- decoding ---------------------------------------------------------------------------------------


class HeaderDecoder:
    """RFC 7541 decoder with its dynamic table; `mutations` counts every change of that table."""

    __slots__ = ("_limit", "_max_size", "_size", "_strings", "_table", "mutations")

    def __init__(self, limit: int = DEFAULT_TABLE_SIZE) -> None:
        # Newest first: dynamic index 62 is _table[0]; each entry keeps its RFC 7541 4.1 size, taken
        # from the octets on the wire (the text may have been decoded with replacements).
        self._table: deque[tuple[Field, int]] = deque()
        self._size = 0
        self._max_size = limit  # what the peer's encoder currently uses
        self._limit = limit  # our SETTINGS_HEADER_TABLE_SIZE: the most the peer may use
        self.mutations = 0
        self._strings: dict[bytes, tuple[str, int]] = {}  # Huffman-coded -> (text, octets)

    def decode(self, block: bytes) -> list[Field]:
        """The (name, value) fields of one complete header block, in order."""
        fields: list[Field] = []
        pos, end = 0, len(block)
        try:
            while pos < end:
                byte = block[pos]
                if byte & 0x80:  # indexed field
                    index, pos = _read_integer(block, pos, 7)
                    fields.append(self._entry(index))
                elif byte & 0x40:  # literal with incremental indexing
                    field, size, pos = self._literal(block, pos, 6)
                    fields.append(field)
                    self._add(field, size)
                elif byte & 0x20:  # dynamic table size update
                    if fields:
                        raise HeaderError("table size update after a header field")
                    size, pos = _read_integer(block, pos, 5)
                    if size > self._limit:
                        raise HeaderError(f"table size {size} above the {self._limit} allowed")
                    self._max_size = size
                    self._evict(0)
                    self.mutations += 1
                else:  # literal without indexing (0000) or never indexed (0001)
                    field, _, pos = self._literal(block, pos, 4)
                    fields.append(field)
        except IndexError:
            raise HeaderError("truncated header block") from None
        return fields

    def _entry(self, index: int) -> Field:
        if 0 < index <= _STATIC_LEN:
            return STATIC_TABLE[index - 1]
        dynamic = index - _STATIC_LEN - 1
        if index == 0 or dynamic >= len(self._table):
            raise HeaderError(f"header index {index} out of range")
        return self._table[dynamic][0]

    def _literal(self, block: bytes, pos: int, prefix_bits: int) -> tuple[Field, int, int]:
        """A literal field, its table size (octets + 32, RFC 7541 4.1), and the position after it."""
        index, pos = _read_integer(block, pos, prefix_bits)
        if index:
            name = self._entry(index)[0]
            name_size = len(name)  # table names are ASCII
        else:
            name, name_size, pos = self._read_string(block, pos)
        value, value_size, pos = self._read_string(block, pos)
        return (name, value), name_size + value_size + _ENTRY_OVERHEAD, pos

    def _read_string(self, block: bytes, pos: int) -> tuple[str, int, int]:
        """(text, octets it stands for, position after it)."""
        coded = block[pos] & 0x80
        length, pos = _read_integer(block, pos, 7)
        end = pos + length
        if end > len(block):
            raise HeaderError("truncated header string")
        raw = block[pos:end]
        if not coded:
            return raw.decode("utf-8", "replace"), length, end
        known = self._strings.get(raw)
        if known is None:
            try:
                octets = huffman.decode(raw)
            except huffman.HuffmanError as exc:
                raise HeaderError(str(exc)) from None
            known = (octets.decode("utf-8", "replace"), len(octets))
            if len(self._strings) >= 512:
                self._strings.clear()
            self._strings[raw] = known
        return known[0], known[1], end

    def _add(self, field: Field, size: int) -> None:
        self.mutations += 1
        if size > self._max_size:  # RFC 7541 4.4: an entry larger than the table empties it
            self._table.clear()
            self._size = 0
            return
        self._evict(size)
        self._table.appendleft((field, size))
        self._size += size

    def _evict(self, room: int) -> None:
        table = self._table
        while table and self._size + room > self._max_size:
            self._size -= table.pop()[1]


def _read_integer(block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = block[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HeaderError("HPACK integer too large")
