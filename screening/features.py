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
compiled `contribution.pyx` when it is built (byte for byte the same).
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

import numpy as np

from screening import preprocess, tokens
from screening.record import RequestRecord, plain_query_key

VERSION = "2"
BIGRAM_WIDTH = 512
TRIGRAM_WIDTH = 1024
ROLE_4GRAM_WIDTH = 1024
N = tokens.N_CLASSES
# Coarse roles of the token classes, the same across languages: a trigram of roles such as
# (quote, keyword, operator) says "a string closed, then code" whether the code is SQL, LDAP, XPath
# or NoSQL, so a family the classifier never saw still shares sequences with the ones it did.
ROLES: dict[str, tuple[str, ...]] = {
    "quote": ("single_quote", "double_quote", "backtick"),
    "keyword": ("sql_union", "sql_select", "sql_dml", "sql_clause", "sql_logic", "sql_time", "sql_func", "sql_meta",
                "js_sink", "shell_strong", "shell_weak", "tpl_gadget", "deser", "jndi", "ldap_attr", "xpath_func",
                "nosql_op", "py_dunder", "event_handler", "js_scheme", "lookup_default"),
    "markup": ("html_danger_tag", "html_tag", "xml_decl", "entity_ref", "lt", "gt"),
    "open": ("lparen", "lbrace", "lbracket", "tpl_open", "dollar_brace", "dollar_paren", "comment_open"),
    "close": ("rparen", "rbrace", "rbracket", "tpl_close", "comment_close"),
    "separator": ("semicolon", "pipe", "shell_and", "newline", "crlf_header", "sql_comment", "amp"),
    "operator": ("equals", "compare", "plus", "minus", "star", "caret", "tilde", "bang", "percent", "at", "dollar",
                 "question", "shell_var", "backslash"),
    "location": ("slash", "path_up", "path_sensitive", "scan_path", "file_ext", "rare_scheme", "web_scheme",
                 "scheme_sep", "internal_host", "ipv4", "colon", "dot", "scanner"),
    "number": ("number", "hex_number"),
    "word": ("word", "long_word", "apostrophe", "cmd_word", "comma", "other"),
}
ROLE_NAMES = ("|", *ROLES)
R = len(ROLE_NAMES)
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
    names += [f"role3:{a}>{b}>{c}" for a in ROLE_NAMES for b in ROLE_NAMES for c in ROLE_NAMES]
    names += [f"role4:{i}" for i in range(ROLE_4GRAM_WIDTH)]
    names += [f"max:{s}" for s in STATS] + [f"min:{s}" for s in STATS]
    names += ["req:log_fields", "req:dropped"]
    return tuple(names)


NAMES = _names()
N_FEATURES = len(NAMES)
_CLS0 = 0
_BI0 = _CLS0 + len(tokens.NAMES)
_TRI0 = _BI0 + BIGRAM_WIDTH
_ROLE3_0 = _TRI0 + TRIGRAM_WIDTH
_ROLE4_0 = _ROLE3_0 + R**3
_MAX0 = _ROLE4_0 + ROLE_4GRAM_WIDTH
_MIN0 = _MAX0 + len(STATS)
_REQ0 = _MIN0 + len(STATS)
_N_CLS = _BI0 - _CLS0
# The 116 dense columns (class maxima, statistic maxima and minima, request counts: what the isolation
# forest and a narrow graph read) and the n-gram columns (each 0 or 1), which split the vector.
DENSE_COLUMNS = np.concatenate([np.arange(_CLS0, _BI0), np.arange(_MAX0, N_FEATURES)]).astype(np.intp)
NGRAMS = slice(_BI0, _MAX0)


def _schema() -> str:
    digest = hashlib.sha256()
    roles = sorted(ROLES.items())
    for part in (VERSION, preprocess.VERSION, *tokens.NAMES, *NAMES, *sorted(tokens.WORDS.items().__iter__()), *roles):
        digest.update(repr(part).encode())
    return f"f{VERSION}-p{preprocess.VERSION}-{digest.hexdigest()[:12]}"


SCHEMA = _schema()


def field_values(record: RequestRecord) -> list[str]:
    """The raw values screened for a record, in a fixed order (what `explain` lists)."""
    values: list[str] = []
    for field in record.fields():
        values.append(field.value)
        if field.location == "query" and not plain_query_key(field.key):
            values.append(field.key)
    return values


_MULT = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
_BI_SHIFT = 64 - BIGRAM_WIDTH.bit_length() + 1
_TRI_SHIFT = 64 - TRIGRAM_WIDTH.bit_length() + 1
_ROLE4_SHIFT = 64 - ROLE_4GRAM_WIDTH.bit_length() + 1


def _role_table() -> np.ndarray:
    table = np.zeros(N, dtype=np.int64)
    for index, (role, members) in enumerate(ROLES.items(), start=1):
        for name in members:
            table[tokens.C[name]] = index
    missing = [name for name in tokens.NAMES if table[tokens.C[name]] == 0]
    if missing:
        raise ValueError(f"token classes without a role: {missing}")
    return table


_ROLE = _role_table()
_ROLE_OF = _ROLE.tolist()


def _positions(size: int, shift: int, base: int) -> np.ndarray:
    """Fibonacci hashing of every n-gram code below `size`, precomputed: a look-up per n-gram instead of
    a 64-bit multiplication (numpy's uint64 product wraps like `& _MASK64`)."""
    codes = np.arange(size, dtype=np.uint64) * np.uint64(_MULT)
    return (base + (codes >> np.uint64(shift))).astype(np.uint16)  # positions < 4,007; concatenated as intp


_BI_AT = _positions(N * N, _BI_SHIFT, _BI0)
_TRI_AT = _positions(N**3, _TRI_SHIFT, _TRI0)
_ROLE4_AT = _positions(R**4, _ROLE4_SHIFT, _ROLE4_0)


def _role_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per token-class trigram code: the position of its role trigram, and its role trigram's code times
    `R` (a role 4-gram's code is that plus the fourth token's role): one look-up each instead of a
    dozen array operations per value (2.4 MB together)."""
    if N > 256:  # `_field` passes the token sequence as bytes
        raise ValueError(f"{N} token classes do not fit in a byte")
    codes = np.arange(N**3, dtype=np.intp)
    role3 = (_ROLE[codes // (N * N)] * R + _ROLE[codes // N % N]) * R + _ROLE[codes % N]
    return (_ROLE3_0 + role3).astype(np.uint16), (role3 * R).astype(np.uint16)


_ROLE3_OF_TRI, _ROLE3R_OF_TRI = _role_tables()
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


@lru_cache(maxsize=16384)
def _field_cached(raw: str) -> tuple[FieldVector, ...]:
    return _value_vectors(raw)


def _value_vectors(raw: str) -> tuple[FieldVector, ...]:
    """The contributions of one screened value: its own, and that of the text it hides as base64."""
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


def field_vectors(raw_values: Sequence[str]) -> list[FieldVector]:
    """The contributions of a request's values; short values are cached by content (headers, paths and
    common labels repeat), with the base64 check that goes with them."""
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

# The compiled contribution, when built (`make setup` builds it): the same bytes for every value, held
# to `python_contribution` by property tests, for a fraction of the instructions.
try:
    from screening.contribution import Combiner, Contributor
except ImportError:  # a checkout that was not built; the tests fail on it (test_contribution.py)
    _contribution = python_contribution
    combine = python_combine
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


def describe(raw_values: Sequence[str]) -> dict[int, str]:
    """Readable names for the n-gram positions a set of values hits (`bi:single_quote>sql_logic`,
    `role4:quote>keyword>number>operator`)."""
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
        roles = [_ROLE_OF[cls] for cls in sequence]
        for a, b, c in zip(roles, roles[1:], roles[2:]):
            names.setdefault(_ROLE3_0 + (a * R + b) * R + c, NAMES[_ROLE3_0 + (a * R + b) * R + c])
        for a, b, c, d in zip(roles, roles[1:], roles[2:], roles[3:]):
            position = _ROLE4_0 + (((((a * R + b) * R + c) * R + d) * _MULT & _MASK64) >> _ROLE4_SHIFT)
            names.setdefault(position, "role4:" + ">".join(ROLE_NAMES[r] for r in (a, b, c, d)))
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
    readable = describe(raw_values) if raw_values is not None and any(_BI0 <= i < _MAX0 for i in order) else {}
    return [(readable.get(int(i), NAMES[i]), round(float(contribution[i]), 3)) for i in order]
