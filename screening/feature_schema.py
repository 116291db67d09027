"""The feature vector's layout: its columns, their names, and where each n-gram lands.

`features.py` fills a vector; this module says what its `N_FEATURES` float32 columns are, in order:
token-class maxima (`cls:*`), hashed class bigrams and trigrams (`bi:*`, `tri:*`), role trigrams
(`role3:*`) and hashed role 4-grams (`role4:*`), statistic maxima and minima (`max:*`, `min:*`), and
the request counts (`req:*`). It holds the offsets of those blocks, the coarse role of every token
class, the Fibonacci-hash position of every n-gram code (looked up per n-gram on the request path),
and `SCHEMA`, the fingerprint a model's manifest must match. All of it is computed once, at import;
nothing here runs per request. `screening.features` re-exports every public name.
"""

from __future__ import annotations

import hashlib

import numpy as np

from screening import preprocess, tokens

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
