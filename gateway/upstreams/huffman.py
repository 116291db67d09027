"""HPACK's static Huffman code (RFC 7541, Appendix B): decoding only, from the code lengths alone.

The code is canonical, so the 257 code lengths below fully define it; the codes are rebuilt once at
import. `decode` handles the common short codes (5 to 8 bits: digits, lower case, common marks) with
one table lookup each and falls back to a per-length search for the rest. The request side never
Huffman-encodes (see `headers.py`), so there is no encoder. Callers cache decoded values: a backend
repeats the same few header values, and this loop costs about a microsecond per character.
"""

from __future__ import annotations

# Code length of each symbol 0..256 (256 is EOS), straight from RFC 7541 Appendix B.
# fmt: off
_LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28,
    28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6,
    6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8,
    7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7,
    7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23,
    24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22,
    23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25,
    26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24,
    20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27,
    27, 27, 27, 26, 30,
)
# fmt: on
_EOS = 256
_MAX_LEN = 30
_PEEK = 8


class HuffmanError(ValueError):
    """Bytes that are not a valid HPACK Huffman string (a bad code, EOS, or bad padding)."""


def _build() -> tuple[dict[int, int], list[int], list[int], list[int], list[tuple[int, int]]]:
    """codes by symbol; per length the first code, the count and the offset into the sorted symbols."""
    order = sorted(range(len(_LENGTHS)), key=lambda s: (_LENGTHS[s], s))
    codes: dict[int, int] = {}
    code, previous = -1, _LENGTHS[order[0]]
    for symbol in order:
        length = _LENGTHS[symbol]
        code = (code + 1) << (length - previous)
        previous = length
        codes[symbol] = code
    first = [0] * (_MAX_LEN + 1)
    count = [0] * (_MAX_LEN + 1)
    offset = [0] * (_MAX_LEN + 1)
    for index, symbol in enumerate(order):
        length = _LENGTHS[symbol]
        if count[length] == 0:
            first[length], offset[length] = codes[symbol], index
        count[length] += 1
    # One lookup for every code of at most 8 bits: each 8-bit window starting with it maps to it.
    peek: list[tuple[int, int]] = [(-1, 0)] * (1 << _PEEK)
    for symbol, code in codes.items():
        length = _LENGTHS[symbol]
        if length <= _PEEK:
            base = code << (_PEEK - length)
            for tail in range(1 << (_PEEK - length)):
                peek[base | tail] = (symbol, length)
    return codes, first, count, offset, peek


CODES, _FIRST, _COUNT, _OFFSET, _PEEK_TABLE = _build()
_SORTED = sorted(range(len(_LENGTHS)), key=lambda s: (_LENGTHS[s], s))


def decode(data: bytes) -> bytes:
    """The octets a Huffman-coded HPACK string stands for."""
    total = len(data) * 8
    bits = int.from_bytes(data, "big")
    out = bytearray()
    pos = 0  # bits consumed
    while total - pos >= 5:  # the shortest code has 5 bits: anything shorter is padding
        left = total - pos
        window = (bits >> (left - _PEEK)) & 0xFF if left >= _PEEK else (bits << (_PEEK - left)) & 0xFF
        symbol, length = _PEEK_TABLE[window]
        if symbol < 0 or length > left:
            symbol, length = _long_code(bits, left)
            if symbol < 0:
                break
        out.append(symbol)
        pos += length
    padding = total - pos
    # What is left must be a prefix of EOS (all ones) shorter than a byte (RFC 7541 5.2).
    if padding > 7 or (bits & ((1 << padding) - 1)) != (1 << padding) - 1:
        raise HuffmanError("invalid Huffman padding")
    return bytes(out)


def _long_code(bits: int, left: int) -> tuple[int, int]:
    """The symbol of more than 8 bits at the head of the `left` remaining bits, or (-1, 0)."""
    for length in range(_PEEK + 1, min(left, _MAX_LEN) + 1):
        index = ((bits >> (left - length)) & ((1 << length) - 1)) - _FIRST[length]
        if 0 <= index < _COUNT[length]:
            symbol = _SORTED[_OFFSET[length] + index]
            if symbol == _EOS:
                raise HuffmanError("EOS symbol inside a Huffman string")
            return symbol, length
    return -1, 0


def encode(data: bytes) -> bytes:
    """Huffman-code `data`; for tests and for peers' encoders, the request path never calls it."""
    value, length = 0, 0
    for byte in data:
        value = (value << _LENGTHS[byte]) | CODES[byte]
        length += _LENGTHS[byte]
    pad = -length % 8
    value = (value << pad) | ((1 << pad) - 1)
    return value.to_bytes((length + pad) // 8, "big")
