"""Features: a `RequestRecord` to a fixed-width float32 vector, shared by training and serving.

Pure and versioned (`VERSION`, and `SCHEMA`, a fingerprint of everything the vector depends on:
preprocessing version, token classes, hash widths, statistic names). A model records the schema it
was trained on in its manifest; the runtime refuses a model whose schema is not this one.

Per field (path, query values and unusual query keys, screened headers, JSON body and WebSocket
leaves, and the base64-decoded text of a value that is base64 of text), the normalised value is
lexed into token classes (`tokens.py`); the request's vector is then
- `cls:*`: per token class, log(1 + count) in the field where that class is most frequent;
- `bi:*`, `tri:*`: token-class bigrams and trigrams over each field (a field boundary is a token of
  its own, so "a field that starts with a quote" is a bigram), hashed to fixed widths, 1 if present
  in any field; these sequences are what generalises across payload lists (libinjection's idea);
- `max:*` and `min:*` over fields of per-field statistics: length, token count, decoding rounds,
  base64, character-class ratios, Shannon entropy, case switches, escape density;
- `req:*`: number of fields, whether some were dropped.

The work is numpy over the concatenated fields, so a request costs a handful of array operations
whatever its number of fields; normalisation and lexing of short values are cached (headers and
paths repeat).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

import numpy as np

from screening import preprocess, tokens
from screening.record import RequestRecord

VERSION = "1"
BIGRAM_WIDTH = 512
TRIGRAM_WIDTH = 1024
N = tokens.N_CLASSES
STATS = (
    "log_length", "log_tokens", "decoding_rounds", "base64", "alpha", "digit", "space", "punct", "non_ascii",
    "special", "entropy", "case_switches", "escapes", "word_tokens", "quote_tokens",
)
_SPECIAL_BYTES = b"'\"<>;(){}$|&`=\\*"
_CACHE_CHARS = 256  # values up to this long are cached by content


def _names() -> tuple[str, ...]:
    names = [f"cls:{name}" for name in tokens.NAMES]
    names += [f"bi:{i}" for i in range(BIGRAM_WIDTH)]
    names += [f"tri:{i}" for i in range(TRIGRAM_WIDTH)]
    names += [f"max:{s}" for s in STATS] + [f"min:{s}" for s in STATS]
    names += ["req:log_fields", "req:dropped"]
    return tuple(names)


NAMES = _names()
N_FEATURES = len(NAMES)
_CLS0 = 0
_BI0 = _CLS0 + len(tokens.NAMES)
_TRI0 = _BI0 + BIGRAM_WIDTH
_MAX0 = _TRI0 + TRIGRAM_WIDTH
_MIN0 = _MAX0 + len(STATS)
_REQ0 = _MIN0 + len(STATS)


def _schema() -> str:
    digest = hashlib.sha256()
    for part in (VERSION, preprocess.VERSION, *tokens.NAMES, *NAMES, *sorted(tokens.WORDS.items().__iter__())):
        digest.update(repr(part).encode())
    return f"f{VERSION}-p{preprocess.VERSION}-{digest.hexdigest()[:12]}"


SCHEMA = _schema()


def field_values(record: RequestRecord) -> list[str]:
    """The raw values screened for a record, in a fixed order (what `explain` lists)."""
    values: list[str] = []
    for field in record.fields():
        values.append(field.value)
        if field.location == "query" and not _plain(field.key):
            values.append(field.key)
    return values


def _plain(key: str) -> bool:
    return len(key) <= 64 and key.replace("_", "").replace("-", "").replace(".", "").isalnum()


_MULT = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
_BI_SHIFT = 64 - BIGRAM_WIDTH.bit_length() + 1
_TRI_SHIFT = 64 - TRIGRAM_WIDTH.bit_length() + 1


class FieldVector:
    """What one value contributes: sparse (positions, values) of the class and n-gram part, and stats."""

    __slots__ = ("positions", "stats", "values")

    def __init__(self, positions: np.ndarray, values: np.ndarray, stats: np.ndarray) -> None:
        self.positions = positions
        self.values = values
        self.stats = stats


@lru_cache(maxsize=16384)
def _field_cached(raw: str, base64: bool) -> FieldVector:
    return _field(raw, base64)


def field_vector(raw: str, base64: bool = False) -> FieldVector:
    """The contribution of one value; short values are cached by content (headers, paths repeat)."""
    return _field_cached(raw, base64) if len(raw) <= _CACHE_CHARS else _field(raw, base64)


def _field(raw: str, base64: bool) -> FieldVector:
    text, rounds = preprocess.normalize_with_rounds(raw)
    classes = tokens.classes(text)
    counts: dict[int, int] = {}
    for cls in classes:
        counts[cls] = counts.get(cls, 0) + 1
    sequence = [0, *classes, 0]
    # Fibonacci hashing of the n-gram codes into power-of-two widths (`describe` repeats it).
    bigrams = [a * N + b for a, b in pairwise(sequence)]
    grams = {_BI0 + (((code * _MULT) & _MASK64) >> _BI_SHIFT) for code in bigrams}
    grams.update(
        _TRI0 + ((((ab * N + c) * _MULT) & _MASK64) >> _TRI_SHIFT) for ab, c in zip(bigrams, sequence[2:])
    )
    positions = [_CLS0 + cls - 1 for cls in counts]
    values = [math.log1p(count) for count in counts.values()]
    positions.extend(grams)
    values.extend([1.0] * len(grams))
    stats = _stats(text, raw, len(classes), rounds, base64, counts)
    return FieldVector(np.array(positions, dtype=np.intp), np.array(values, dtype=np.float32), stats)


def _stats(text: str, raw: str, n_tokens: int, rounds: int, base64: bool, counts: dict[int, int]) -> np.ndarray:
    data = text.encode("utf-8", "replace")
    size = len(data) or 1
    kinds = data.translate(_KIND_TABLE)
    entropy = 0.0
    if data:
        entropy = math.log2(size) - sum(c * math.log2(c) for c in Counter(data).values()) / size
    token_total = n_tokens or 1
    quotes = counts.get(_QUOTES[0], 0) + counts.get(_QUOTES[1], 0) + counts.get(_QUOTES[2], 0)
    raw_size = len(raw) or 1
    return np.array(
        (
            math.log1p(len(text)),
            math.log1p(n_tokens),
            rounds / preprocess.MAX_ROUNDS,
            1.0 if base64 else 0.0,
            kinds.count(b"\x01") / size,
            kinds.count(b"\x02") / size,
            kinds.count(b"\x03") / size,
            kinds.count(b"\x04") / size,
            kinds.count(b"\x05") / size,
            (size - len(data.translate(None, _SPECIAL_BYTES))) / size,
            entropy / 8.0,
            _case_switches(raw),
            min((raw.count("%") + raw.count("&") + raw.count("\\")) / raw_size * 4.0, 1.0),
            counts.get(_WORD_CLASS, 0) / token_total,
            quotes / token_total,
        ),
        dtype=np.float32,
    )


def _case_switches(raw: str) -> float:
    """Case changes inside words (`SeLeCt`) per character, read before normalisation."""
    if raw.islower() or raw.isupper() or not raw:
        return 0.0
    shape = raw[:1024].encode("ascii", "replace").translate(_CASE_TABLE)
    switches = shape.count(b"Aa") + shape.count(b"aA")
    return min(switches / len(raw) * 4.0, 1.0)


def extract(record: RequestRecord) -> np.ndarray:
    """The feature vector of one record, float32 of length `N_FEATURES`."""
    return _vector(field_values(record), record.dropped)


def extract_many(records: Sequence[RequestRecord]) -> np.ndarray:
    out = np.zeros((len(records), N_FEATURES), dtype=np.float32)
    for i, record in enumerate(records):
        out[i] = extract(record)
    return out


def extract_values(values: Sequence[str], dropped: int = 0) -> np.ndarray:
    """The vector of a bare list of values (a WebSocket message, one field screened on its own)."""
    return _vector(list(values), dropped)


def field_vectors(raw_values: Sequence[str]) -> list[FieldVector]:
    out = []
    for raw in raw_values:
        out.append(field_vector(raw))
        if len(raw) >= 16:
            hidden = preprocess.base64_text(raw)
            if hidden is not None:
                out.append(field_vector(hidden, True))
    return out


def _vector(raw_values: list[str], dropped: int) -> np.ndarray:
    return combine(field_vectors(raw_values), dropped)


def combine(fields: Sequence[FieldVector], dropped: int = 0) -> np.ndarray:
    """The request vector from its fields' contributions: max of classes, n-grams, and max/min of stats."""
    vector = np.zeros(N_FEATURES, dtype=np.float32)
    if not fields:
        return vector
    if len(fields) == 1:
        only = fields[0]
        vector[only.positions] = only.values
        vector[_MAX0:_MIN0] = only.stats
        vector[_MIN0:_REQ0] = only.stats
    else:
        positions = np.concatenate([f.positions for f in fields])
        values = np.concatenate([f.values for f in fields])
        np.maximum.at(vector, positions, values)
        stats = np.stack([f.stats for f in fields])
        vector[_MAX0:_MIN0] = stats.max(axis=0)
        vector[_MIN0:_REQ0] = stats.min(axis=0)
    vector[_REQ0] = np.log1p(len(fields))
    vector[_REQ0 + 1] = 1.0 if dropped else 0.0
    return vector


_WORD_CLASS = tokens.C["word"]
_QUOTES = (tokens.C["single_quote"], tokens.C["double_quote"], tokens.C["backtick"])


def _tables() -> tuple[bytes, bytes]:
    # Byte kinds: 0 control, 1 letter, 2 digit, 3 space, 4 ASCII punctuation, 5 any byte of non-ASCII.
    kind = bytearray(256)
    case = bytearray(b"." * 256)
    for code in range(256):
        ch = chr(code)
        if code >= 128:
            kind[code] = 5
        elif ch.isalpha():
            kind[code] = 1
            case[code] = ord("A") if ch.isupper() else ord("a")
        elif ch.isdigit():
            kind[code] = 2
        elif ch.isspace():
            kind[code] = 3
        elif ch.isprintable():
            kind[code] = 4
    return bytes(kind), bytes(case)


_KIND_TABLE, _CASE_TABLE = _tables()


def describe(raw_values: Sequence[str]) -> dict[int, str]:
    """Readable names for the hashed positions a set of values hits (`bi:single_quote>sql_logic`)."""
    names: dict[int, str] = {}

    def label(cls: int) -> str:
        return "|" if cls == 0 else tokens.NAMES[cls - 1]

    for raw in raw_values:
        sequence = [0, *tokens.classes(preprocess.normalize(raw)), 0]
        for a, b in pairwise(sequence):
            names.setdefault(_BI0 + (((a * N + b) * _MULT & _MASK64) >> _BI_SHIFT), f"bi:{label(a)}>{label(b)}")
        for a, b, c in zip(sequence, sequence[1:], sequence[2:]):
            position = _TRI0 + ((((a * N + b) * N + c) * _MULT & _MASK64) >> _TRI_SHIFT)
            names.setdefault(position, f"tri:{label(a)}>{label(b)}>{label(c)}")
    return names


def top_contributions(vector: np.ndarray, weights: np.ndarray, k: int, raw_values: Sequence[str] | None = None,
                      baseline: np.ndarray | None = None) -> list[tuple[str, float]]:
    """The `k` features pushing the score up most: weight times (value minus the benign baseline),
    named readably (hashed n-grams resolved against `raw_values`) when values are given."""
    if k <= 0 or len(weights) != len(vector):
        return []
    contribution = (vector - baseline) * weights if baseline is not None and len(baseline) else vector * weights
    candidates = np.flatnonzero(contribution > 0)
    if len(candidates) == 0:
        return []
    order = candidates[np.argsort(contribution[candidates])[::-1][:k]]
    readable = describe(raw_values) if raw_values is not None and any(i >= _BI0 and i < _MAX0 for i in order) else {}
    return [(readable.get(int(i), NAMES[i]), round(float(contribution[i]), 3)) for i in order]
