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
paths repeat). A value's own contribution is defined by `python_contribution` and computed by the
compiled `contribution.pyx` when it is built (byte for byte the same), and a request's values reach
theirs through the compiled `field_path.pyx` likewise. The layout of the vector (column names, block
offsets, n-gram hash positions, `SCHEMA`) is `feature_schema.py`, and the readable explanation of a
row (`describe`, `top_contributions`) is `explanation.py`, both re-exported here.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

import numpy as np

from screening import preprocess, tokens
from screening.explanation import describe, top_contributions
from screening.feature_schema import (
    _BI0,
    _BI_AT,
    _CLS0,
    _MAX0,
    _MIN0,
    _N_CLS,
    _REQ0,
    _ROLE,
    _ROLE3_OF_TRI,
    _ROLE3R_OF_TRI,
    _ROLE4_AT,
    _TRI_AT,
    BIGRAM_WIDTH,
    DENSE_COLUMNS,
    N_FEATURES,
    NAMES,
    NGRAMS,
    ROLE_4GRAM_WIDTH,
    ROLE_NAMES,
    ROLES,
    SCHEMA,
    STATS,
    TRIGRAM_WIDTH,
    VERSION,
    N,
    R,
)
from screening.record import RequestRecord, plain_query_key

__all__ = (
    "BIGRAM_WIDTH",
    "DENSE_COLUMNS",
    "NAMES",
    "NGRAMS",
    "N_FEATURES",
    "ROLES",
    "ROLE_4GRAM_WIDTH",
    "ROLE_NAMES",
    "SCHEMA",
    "STATS",
    "TRIGRAM_WIDTH",
    "VERSION",
    "FieldVector",
    "N",
    "R",
    "combine",
    "describe",
    "extract",
    "extract_many",
    "extract_values",
    "field_values",
    "field_vector",
    "field_vectors",
    "python_combine",
    "python_contribution",
    "python_field_vectors",
    "python_value_vectors",
    "top_contributions",
)

_SPECIAL_BYTES = b"'\"<>;(){}$|&`=\\*"
_CACHE_CHARS = 256  # values up to this long are cached by content
_CACHE_SIZE = 16384  # values in that cache (the compiled one is emptied when full, lru_cache drops the oldest)


def field_values(record: RequestRecord) -> list[str]:
    """The raw values screened for a record, in a fixed order (what `explain` lists)."""
    values: list[str] = []
    for field in record.fields():
        values.append(field.value)
        if field.location == "query" and not plain_query_key(field.key):
            values.append(field.key)
    return values


_XLOGX = [0.0] + [c * math.log2(c) for c in range(1, 4097)]  # entropy terms of byte counts
_LOG1P_BYTES = [array("f", [math.log1p(c)]).tobytes() for c in range(1025)]  # a class count's float32 bytes


class FieldVector:
    """What one value contributes: `dense`, its class counts then its statistics (maxed and minned over
    fields), and `grams`, the positions of the n-grams it has (each 1).

    Both are kept as raw bytes (`dense_bytes`: float32, `grams_bytes`: intp): `combine` joins the
    bytes of a request's fields and reads them back as one array, two C calls instead of a numpy
    call per field, and a value's features are built without a numpy call at all."""

    __slots__ = ("dense_bytes", "grams_bytes")

    def __init__(self, dense_bytes: bytes, grams_bytes: bytes) -> None:
        self.dense_bytes = dense_bytes
        self.grams_bytes = grams_bytes

    @property
    def dense(self) -> np.ndarray:
        return np.frombuffer(self.dense_bytes, dtype=np.float32)

    @property
    def grams(self) -> np.ndarray:
        return np.frombuffer(self.grams_bytes, dtype=np.intp)

    @property
    def stats(self) -> np.ndarray:
        return self.dense[_N_CLS:]


def python_value_vectors(raw: str) -> tuple[FieldVector, ...]:
    """The contributions of one screened value: its own, and that of the text it hides as base64. The
    definition of `_value_vectors`, which is the compiled one (`field_path.pyx`) when it is built."""
    own = _field(raw, False)
    hidden = preprocess.base64_text(raw) if len(raw) >= 16 else None
    return (own,) if hidden is None else (own, _field(hidden, True))


def field_vector(raw: str, base64: bool = False) -> FieldVector:
    """The contribution of one value (`base64`: the value is the decoded text of a base64 value)."""
    return _field(raw, base64)


def _field(raw: str, base64: bool) -> FieldVector:
    text, rounds = preprocess.normalize_with_rounds(raw)
    return FieldVector(*_contribution(text, raw, rounds, base64, tokens.classes(text)))


def python_contribution(text: str, raw: str, rounds: int, base64: bool, classes: list[int]) -> tuple[bytes, bytes]:
    """A value's `FieldVector` bytes (dense, grams) from its normalised text and token classes: the
    definition of `_contribution`, which is the compiled one (`contribution.pyx`) when it is built."""
    # The n-grams are computed as arrays over the token sequence (a fixed number of numpy calls, not a
    # Python step per token): a new value's features are most of what a request with a new message costs.
    counts = [0] * N  # per class; a list and one loop cost less than a Counter and its items
    for cls in classes:
        counts[cls] += 1
    sequence = np.frombuffer(bytes([0, *classes, 0]), dtype=np.uint8).astype(np.intp)  # classes < 256
    bigrams = sequence[:-1] * N
    bigrams += sequence[1:]
    trigrams = bigrams[:-1] * N
    trigrams += sequence[2:]
    role4 = _ROLE3R_OF_TRI[trigrams[:-1]] + _ROLE[sequence[3:]]
    grams = np.concatenate((_BI_AT[bigrams], _TRI_AT[trigrams], _ROLE3_OF_TRI[trigrams], _ROLE4_AT[role4]),
                           dtype=np.intp)
    if len(classes) < len(_LOG1P_BYTES):  # every count is in the table
        dense = b"".join(map(_LOG1P_BYTES.__getitem__, counts[1:]))
    else:
        dense = array("f", map(math.log1p, counts[1:])).tobytes()
    stats = array("f", _stats(text, raw, len(classes), rounds, base64, counts)).tobytes()
    return dense + stats, grams.tobytes()


def _stats(text: str, raw: str, n_tokens: int, rounds: int, base64: bool, counts: list[int]) -> tuple[float, ...]:
    data = text.encode("utf-8", "replace")
    size = len(data) or 1
    kinds = data.translate(_KIND_TABLE)
    entropy = 0.0
    if data:
        # The byte histogram in one C call, its terms added in byte order. (A Counter added them in
        # order of first appearance: the double sum can differ in its last bit, which the float32
        # feature almost always rounds away; identical on the 13,528 values checked when it changed.)
        histogram = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
        terms = histogram.compress(histogram).tolist()
        entropy = math.log2(size) - (sum(map(_XLOGX.__getitem__, terms)) if size <= 4096 else
                                     sum(c * math.log2(c) for c in terms)) / size
    token_total = n_tokens or 1
    quotes = counts[_QUOTES[0]] + counts[_QUOTES[1]] + counts[_QUOTES[2]]
    raw_size = len(raw) or 1
    return (
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
        counts[_WORD_CLASS] / token_total,
        quotes / token_total,
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
    for i, rec in enumerate(records):
        out[i] = extract(rec)
    return out


def extract_values(values: Sequence[str], dropped: int = 0) -> np.ndarray:
    """The vector of a bare list of values (a WebSocket message, one field screened on its own)."""
    return _vector(list(values), dropped)


def python_field_vectors(raw_values: Sequence[str]) -> list[FieldVector]:
    """The contributions of a request's values; short values are cached by content (headers, paths and
    common labels repeat), with the base64 check that goes with them. The definition of
    `field_vectors`, which is the compiled one (`field_path.pyx`) when it is built."""
    out: list[FieldVector] = []
    for raw in raw_values:
        out += _field_cached(raw) if len(raw) <= _CACHE_CHARS else _value_vectors(raw)
    return out


def _vector(raw_values: list[str], dropped: int) -> np.ndarray:
    return combine(field_vectors(raw_values), dropped)


_DENSE = _N_CLS + len(STATS)
_maximum, _minimum = np.maximum.reduce, np.minimum.reduce  # what ndarray.max/min call, minus their wrapper
_LOG1P_FIELDS = [np.float32(np.log1p(n)) for n in range(1025)]  # what `np.log1p(n)` stores, looked up


def python_combine(fields: Sequence[FieldVector], dropped: int = 0) -> np.ndarray:
    """The request vector from its fields' contributions: max of classes, n-grams, and max/min of stats.

    The definition of `combine`, which is the compiled one (`contribution.pyx`) when it is built. A
    handful of numpy calls whatever the number of fields: the fields' n-gram positions and dense
    parts are joined as bytes and read back as one array each."""
    vector = np.zeros(N_FEATURES, dtype=np.float32)
    n = len(fields)
    if not n:
        return vector
    if n == 1:
        only = fields[0]
        vector[only.grams] = 1.0
        dense = only.dense
        vector[_CLS0:_BI0] = dense[:_N_CLS]
        vector[_MAX0:_MIN0] = dense[_N_CLS:]
        vector[_MIN0:_REQ0] = dense[_N_CLS:]
    else:
        vector[np.frombuffer(b"".join([f.grams_bytes for f in fields]), dtype=np.intp)] = 1.0
        stacked = np.frombuffer(b"".join([f.dense_bytes for f in fields]), dtype=np.float32).reshape(n, _DENSE)
        top = _maximum(stacked, axis=0)
        vector[_CLS0:_BI0] = top[:_N_CLS]
        vector[_MAX0:_MIN0] = top[_N_CLS:]
        _minimum(stacked[:, _N_CLS:], axis=0, out=vector[_MIN0:_REQ0])
    vector[_REQ0] = _LOG1P_FIELDS[n] if n < len(_LOG1P_FIELDS) else np.log1p(n)
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


class _ValueCache(Protocol):
    """`_field_cached`: `_value_vectors` by value, bounded (`functools.lru_cache`, or the compiled one)."""

    def __call__(self, raw: str) -> tuple[FieldVector, ...]: ...
    def cache_clear(self) -> None: ...


# The compiled contribution and value path, when built (`make setup` builds them): the same bytes for
# every value, held to `python_contribution`, `python_combine`, `python_value_vectors` and
# `python_field_vectors` by property tests, for a fraction of the instructions.
_field_cached: _ValueCache
try:
    from screening.contribution import Combiner, Contributor
    from screening.field_path import FieldPath
except ImportError:  # a checkout that was not built; the tests fail on it (test_contribution.py)
    _contribution = python_contribution
    combine = python_combine
    _value_vectors = python_value_vectors
    _field_cached = lru_cache(maxsize=_CACHE_SIZE)(python_value_vectors)
    field_vectors = python_field_vectors
else:
    _contribution = Contributor(
        n_classes=N, bigram_at=_BI_AT, trigram_at=_TRI_AT, role3_of_trigram=_ROLE3_OF_TRI,
        role3r_of_trigram=_ROLE3R_OF_TRI, role=_ROLE, role4_at=_ROLE4_AT, log1p_bytes=b"".join(_LOG1P_BYTES),
        xlogx=_XLOGX, kind_table=_KIND_TABLE, case_table=_CASE_TABLE, special_bytes=_SPECIAL_BYTES,
        max_rounds=preprocess.MAX_ROUNDS, word_class=_WORD_CLASS, quote_classes=_QUOTES, n_stats=len(STATS),
    ).contribution
    combine = Combiner(
        n_features=N_FEATURES, n_cls=_N_CLS, n_stats=len(STATS), cls0=_CLS0, max0=_MAX0, min0=_MIN0, req0=_REQ0,
        log1p_fields=_LOG1P_FIELDS, zeros=np.zeros, float32=np.float32, log1p=np.log1p,
    ).combine
    _path = FieldPath(
        classes=tokens.classes, contribution=_contribution, field_vector=FieldVector,
        normalize_with_rounds=preprocess.normalize_with_rounds, base64_text=preprocess.base64_text,
        cache_size=_CACHE_SIZE, cache_chars=_CACHE_CHARS, max_chars=preprocess.MAX_CHARS,
    )
    _value_vectors, _field_cached, field_vectors = _path.value_vectors, _path.cached, _path.field_vectors
