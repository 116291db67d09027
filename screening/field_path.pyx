# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The compiled path of a request's values to their contributions: `features.python_field_vectors` and
`features.python_value_vectors`, and `preprocess.python_plain`, in C, the same results.

A request with a new value spends most of its screening here: the loop over the request's values (the
cache asked for each), and for the new value, normalisation, the lexer, the contribution and the
`FieldVector`. The Python definitions are three or four interpreted frames deep per value; this module
is an accelerator they use when it is built. It calls the same lexer, contribution, cache and general
normalisation the definitions call, in the same order, and implements one thing itself: `plain`, the
normalisation of a plain printable ASCII value (no escape, entity, backslash, control character or
comment marker: lower case, runs of spaces folded), read in one pass over its bytes where the
definition makes a handful of searches.
"""

from cpython.unicode cimport PyUnicode_Check, PyUnicode_CheckExact

cdef extern from "Python.h":
    int PyUnicode_READY(object) except -1
    bint PyUnicode_IS_ASCII(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    unsigned char* PyUnicode_1BYTE_DATA(object)
    object PyUnicode_New(Py_ssize_t size, unsigned int maxchar)

cdef enum:
    SPACE = 32
    MIN_BASE64 = 16  # `features.python_value_vectors` asks `base64_text` only from this length


# Per ASCII byte, what `plain` does with it: go on (most bytes), note an upper-case letter, look at the
# bytes before it (a space, and the bytes the comment markers `/*`, `*/`, `<!--`, `-->` end with), or
# send the value to the general path (a control character, `%`, `&`, a backslash).
cdef enum:
    GO_ON, UPPER, LOOK, REFUSE
cdef unsigned char _KIND[128]
for _byte in range(128):
    _KIND[_byte] = (REFUSE if _byte < 32 or _byte == 127 or chr(_byte) in "%&\\" else UPPER if chr(_byte).isupper()
                    else LOOK if chr(_byte) in " */->" else GO_ON)


def plain(value, Py_ssize_t max_chars):
    """`preprocess.python_plain(value, max_chars)`: the normal form of a plain printable ASCII str of at
    most `max_chars` characters, else None."""
    if not PyUnicode_Check(value):
        return None
    PyUnicode_READY(value)
    if not PyUnicode_IS_ASCII(value):
        return None
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(value), i, folded = 0
    if n > max_chars:
        return None
    cdef const unsigned char* data = PyUnicode_1BYTE_DATA(value)
    cdef unsigned char c, kind, before
    cdef bint upper = False
    for i in range(n):
        c = data[i]
        kind = _KIND[c]
        if kind == GO_ON:
            continue
        if kind == UPPER:
            upper = True
            continue
        if kind == REFUSE:
            return None
        before = data[i - 1] if i else 0
        if c == SPACE:
            folded += before == SPACE
        elif c == b"*":
            if before == b"/":
                return None
        elif c == b"/":
            if before == b"*":
                return None
        elif c == b"-":
            if before == b"-" and i >= 3 and data[i - 2] == b"!" and data[i - 3] == b"<":
                return None
        elif before == b"-" and i >= 2 and data[i - 2] == b"-":  # c is ">"
            return None
    if not upper and not folded and PyUnicode_CheckExact(value):
        return value  # already its normal form
    out = PyUnicode_New(n - folded, 127)
    cdef unsigned char* write = PyUnicode_1BYTE_DATA(out)
    cdef Py_ssize_t j = 0
    if not folded:  # a plain map, which the compiler turns into vector instructions
        for i in range(n):
            c = data[i]
            write[i] = c | (<unsigned char>(<unsigned char>(c - 65) < 26) << 5)  # A-Z to a-z
        return out
    before = 0
    for i in range(n):
        c = data[i]
        if c == SPACE and before == SPACE:
            continue
        write[j] = c + 32 if b"A" <= c <= b"Z" else c
        j += 1
        before = c
    return out


cdef class FieldPath:
    """`value_vectors(raw)` and `field_vectors(raw_values)`, from `features`' parts; `cached` is the
    bounded cache of `value_vectors` by value that `field_vectors` asks for short values."""

    cdef object classes, contribution, field_vector, normalize_with_rounds, base64_text
    cdef Py_ssize_t cache_chars, max_chars
    cdef readonly ValueCache cached

    def __init__(self, *, classes, contribution, field_vector, normalize_with_rounds, base64_text,
                 cache_size: int, cache_chars: int, max_chars: int) -> None:
        self.classes, self.contribution, self.field_vector = classes, contribution, field_vector
        self.normalize_with_rounds, self.base64_text = normalize_with_rounds, base64_text
        self.cache_chars, self.max_chars = cache_chars, max_chars
        self.cached = ValueCache(self, cache_size)

    def field_vectors(self, raw_values):
        """The contributions of a request's values: `features.python_field_vectors`."""
        cdef list out = []
        cdef tuple found
        cdef object raw, field
        cdef ValueCache cached = self.cached
        for raw in raw_values:
            found = cached.get(raw) if len(raw) <= self.cache_chars else self.value_vectors(raw)
            for field in found:
                out.append(field)
        return out

    def value_vectors(self, raw):
        """The contributions of one value, its own and that of the text it hides as base64:
        `features.python_value_vectors`."""
        own = self._field(raw, False)
        hidden = self.base64_text(raw) if len(raw) >= MIN_BASE64 else None
        return (own,) if hidden is None else (own, self._field(hidden, True))

    cdef object _field(self, raw, bint base64):
        cdef int rounds = 0
        text = plain(raw, self.max_chars)
        if text is None:
            text, rounds = self.normalize_with_rounds(raw)
        dense, grams = self.contribution(text, raw, rounds, base64, self.classes(text))
        return self.field_vector(dense, grams)


cdef class ValueCache:
    """`value_vectors` by value, at most `size` of them, emptied when full (as the lexer's tables are:
    headers, paths and common labels come straight back); `cache_clear()` empties it. One dict look-up
    per value, where `functools.lru_cache` called from C cost about 600 instructions."""

    cdef FieldPath path
    cdef dict table
    cdef Py_ssize_t size

    def __init__(self, FieldPath path, Py_ssize_t size) -> None:
        self.path, self.table, self.size = path, {}, size

    def __call__(self, raw):
        return self.get(raw)

    def __len__(self) -> int:
        return len(self.table)

    def cache_clear(self) -> None:
        self.table.clear()

    cdef tuple get(self, raw):
        found = self.table.get(raw)
        if found is None:
            found = self.path.value_vectors(raw)
            if len(self.table) >= self.size:
                self.table.clear()
            self.table[raw] = found
        return <tuple>found
