# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The compiled contribution of one value: `features.python_contribution` in C, the same bytes for
every value.

`features.py` is the definition (class counts, hashed n-grams through its precomputed position tables,
per-field statistics); this module is an accelerator it uses when it is built. It reads the token
classes and the text once each, where the definition makes a dozen numpy arrays and a dozen byte
strings per value. It is exact, not close: the n-gram positions come from the definition's own tables,
class counts from its float32 `log1p` table, and every statistic is the same double computed the same
way (the same libm `log1p` and `log2` the `math` module calls, integer ratios as Python divides small
ints, the entropy's terms added in byte order as the builtin `sum` adds them) before the same cast to
float32.
"""

import builtins
import sys

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.math cimport log1p, log2
from libc.string cimport memset

cdef extern from "Python.h":
    int PyUnicode_READY(object) except -1
    int PyUnicode_KIND(object)
    void* PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    bint PyUnicode_IS_ASCII(object)
    unsigned int PyUnicode_READ(int kind, void* data, Py_ssize_t index) nogil
    int PyUnicode_1BYTE_KIND

cdef object _sum = builtins.sum
# Python 3.11's `sum` of floats adds them in order, in a double (3.12 compensates the rounding, so from
# there the builtin itself is called: same result, more instructions).
cdef bint _PLAIN_SUM = sys.version_info < (3, 12)

cdef enum:
    CASE_CHARS = 1024  # `_case_switches` reads this many characters


cdef bytes _table(object array, str dtype, Py_ssize_t size, str name):
    if str(array.dtype) != dtype or array.ndim != 1 or array.shape[0] != size:
        raise ValueError(f"{name}: expected {size} values of {dtype}, got {array.shape} of {array.dtype}")
    return array.tobytes()


cdef class Contributor:
    """`contribution(text, raw, rounds, base64, classes)`, built from `features`' tables."""

    cdef int n, n_stats, word_class, quote0, quote1, quote2, max_rounds
    cdef Py_ssize_t n_bigrams, n_trigrams, n_role4, n_log1p
    cdef bytes keep_bigram, keep_trigram, keep_role3, keep_role3r, keep_role, keep_role4, keep_log1p
    cdef bytes keep_kind, keep_case
    cdef const unsigned short* bigram_at
    cdef const unsigned short* trigram_at
    cdef const unsigned short* role3_of_trigram
    cdef const unsigned short* role3r_of_trigram
    cdef const long long* role
    cdef const unsigned short* role4_at
    cdef const float* log1p_table
    cdef const unsigned char* kind
    cdef const unsigned char* case
    cdef unsigned char special[256]
    cdef double xlogx[4097]  # c * log2(c), the definition's floats as C doubles

    def __init__(self, *, n_classes: int, bigram_at, trigram_at, role3_of_trigram, role3r_of_trigram, role,
                 role4_at, log1p_bytes: bytes, xlogx: list, kind_table: bytes, case_table: bytes,
                 special_bytes: bytes, max_rounds: int, word_class: int, quote_classes: tuple,
                 n_stats: int) -> None:
        cdef Py_ssize_t n = n_classes
        if not 0 < n <= 256:
            raise ValueError("token classes must fit in a byte")
        self.n = <int>n
        self.keep_bigram = _table(bigram_at, "uint16", n * n, "bigram_at")
        self.keep_trigram = _table(trigram_at, "uint16", n * n * n, "trigram_at")
        self.keep_role3 = _table(role3_of_trigram, "uint16", n * n * n, "role3_of_trigram")
        self.keep_role3r = _table(role3r_of_trigram, "uint16", n * n * n, "role3r_of_trigram")
        self.keep_role = _table(role, "int64", n, "role")
        self.n_role4 = role4_at.shape[0]
        self.keep_role4 = _table(role4_at, "uint16", self.n_role4, "role4_at")
        self.bigram_at = <const unsigned short*>PyBytes_AS_STRING(self.keep_bigram)
        self.trigram_at = <const unsigned short*>PyBytes_AS_STRING(self.keep_trigram)
        self.role3_of_trigram = <const unsigned short*>PyBytes_AS_STRING(self.keep_role3)
        self.role3r_of_trigram = <const unsigned short*>PyBytes_AS_STRING(self.keep_role3r)
        self.role = <const long long*>PyBytes_AS_STRING(self.keep_role)
        self.role4_at = <const unsigned short*>PyBytes_AS_STRING(self.keep_role4)
        if len(log1p_bytes) % 4:
            raise ValueError("log1p_bytes: float32 values expected")
        self.keep_log1p = log1p_bytes
        self.n_log1p = len(log1p_bytes) // 4
        self.log1p_table = <const float*>PyBytes_AS_STRING(self.keep_log1p)
        if len(kind_table) != 256 or len(case_table) != 256:
            raise ValueError("byte tables of 256 entries expected")
        if not set(case_table) <= {46, 65, 97}:  # `_case_switches` tells the shapes apart by their xor
            raise ValueError("case_table: the shapes '.', 'A' and 'a' expected")
        if case_table[128:] != case_table[63:64] * 128:  # a one-byte string's byte indexes it directly
            raise ValueError("case_table: every non-ASCII byte must have the shape of '?'")
        self.keep_kind, self.keep_case = kind_table, case_table
        self.kind = <const unsigned char*>PyBytes_AS_STRING(self.keep_kind)
        self.case = <const unsigned char*>PyBytes_AS_STRING(self.keep_case)
        if len(xlogx) != 4097 or not all(type(x) is float for x in xlogx):
            raise ValueError("xlogx: the 4,097 floats c * log2(c) expected")
        for c, term in enumerate(xlogx):
            self.xlogx[c] = term
        memset(self.special, 0, 256)
        for byte in special_bytes:
            self.special[byte] = 1
        if n_stats != 15 or max_rounds <= 0:
            raise ValueError("screening/contribution.pyx computes another set of statistics than features.STATS")
        self.n_stats, self.max_rounds, self.word_class = n_stats, max_rounds, word_class
        self.quote0, self.quote1, self.quote2 = quote_classes

    def contribution(self, str text not None, str raw not None, int rounds, bint base64, list classes not None
                     ) -> tuple:
        """A value's (dense bytes, gram bytes): `features.python_contribution`."""
        cdef Py_ssize_t n_tokens = len(classes), length = n_tokens + 2, i, k, value
        cdef Py_ssize_t counts[256]
        cdef unsigned char stack[1026]
        cdef bytes sequence_bytes = None
        cdef unsigned char* sequence = stack
        if length > 1026:
            sequence_bytes = PyBytes_FromStringAndSize(NULL, length)
            sequence = <unsigned char*>PyBytes_AS_STRING(sequence_bytes)
        memset(counts, 0, sizeof(counts))
        sequence[0] = sequence[length - 1] = 0
        for i in range(n_tokens):
            value = classes[i]
            if value < 0 or value >= self.n:
                raise ValueError(f"token class {value} out of range")
            counts[value] += 1
            sequence[i + 1] = <unsigned char>value
        return self._dense(text, raw, rounds, base64, counts, n_tokens), self._grams(sequence, length)

    cdef bytes _grams(self, const unsigned char* sequence, Py_ssize_t length):
        cdef Py_ssize_t n_bi = length - 1, n_tri = length - 2, n_r4 = length - 3 if length > 3 else 0, k
        cdef Py_ssize_t n = self.n, code, trigram, role4
        cdef bytes out = PyBytes_FromStringAndSize(NULL, (n_bi + 2 * n_tri + n_r4) * sizeof(Py_ssize_t))
        cdef Py_ssize_t* grams = <Py_ssize_t*>PyBytes_AS_STRING(out)
        cdef Py_ssize_t* tri = grams + n_bi
        cdef Py_ssize_t* role3 = tri + n_tri
        cdef Py_ssize_t* r4 = role3 + n_tri
        for k in range(n_bi):
            code = sequence[k] * n + sequence[k + 1]
            grams[k] = self.bigram_at[code]
            if k < n_tri:
                trigram = code * n + sequence[k + 2]
                tri[k] = self.trigram_at[trigram]
                role3[k] = self.role3_of_trigram[trigram]
                if k < n_r4:
                    role4 = self.role3r_of_trigram[trigram] + self.role[sequence[k + 3]]
                    if role4 < 0 or role4 >= self.n_role4:
                        raise ValueError("a role 4-gram outside role4_at")
                    r4[k] = self.role4_at[role4]
        return out

    cdef bytes _dense(self, str text, str raw, int rounds, bint base64, Py_ssize_t* counts, Py_ssize_t n_tokens):
        cdef Py_ssize_t i, c, n_dense = self.n - 1
        cdef bytes out = PyBytes_FromStringAndSize(NULL, (n_dense + self.n_stats) * sizeof(float))
        cdef float* dense = <float*>PyBytes_AS_STRING(out)
        for i in range(1, self.n):
            c = counts[i]
            dense[i - 1] = self.log1p_table[c] if c < self.n_log1p else <float>log1p(<double>c)
        cdef float* stats = dense + n_dense
        # The text's UTF-8 bytes (lone surrogates as '?'): kinds, specials and the byte histogram. An
        # ASCII string's characters are its UTF-8 bytes.
        cdef bytes data
        cdef const unsigned char* raw_bytes
        cdef Py_ssize_t size
        PyUnicode_READY(text)
        if PyUnicode_IS_ASCII(text):
            raw_bytes = <const unsigned char*>PyUnicode_DATA(text)
            size = PyUnicode_GET_LENGTH(text)
        else:
            data = text.encode("utf-8", "replace")
            raw_bytes = <const unsigned char*>PyBytes_AS_STRING(data)
            size = len(data)
        cdef Py_ssize_t specials = 0, n_bytes = size
        cdef Py_ssize_t kinds[6]
        cdef Py_ssize_t histogram[256]
        memset(kinds, 0, sizeof(kinds))
        memset(histogram, 0, sizeof(histogram))
        for i in range(size):
            kinds[self.kind[raw_bytes[i]]] += 1
            specials += self.special[raw_bytes[i]]
            histogram[raw_bytes[i]] += 1
        cdef double entropy = 0.0, total = 0.0
        cdef list terms
        if size:
            if _PLAIN_SUM:
                for i in range(256):
                    c = histogram[i]
                    if c:
                        total += self.xlogx[c] if size <= 4096 else <double>c * log2(<double>c)
            else:
                terms = []
                for i in range(256):
                    c = histogram[i]
                    if c:
                        terms.append(self.xlogx[c] if size <= 4096 else <double>c * log2(<double>c))
                total = _sum(terms)
            entropy = log2(<double>size) - total / <double>size
        else:
            size = 1
        cdef Py_ssize_t token_total = n_tokens if n_tokens else 1
        cdef Py_ssize_t quotes = counts[self.quote0] + counts[self.quote1] + counts[self.quote2]
        cdef Py_ssize_t raw_length = PyUnicode_GET_LENGTH(raw)
        stats[0] = <float>log1p(<double>PyUnicode_GET_LENGTH(text))
        stats[1] = <float>log1p(<double>n_tokens)
        stats[2] = <float>(<double>rounds / <double>self.max_rounds)
        stats[3] = 1.0 if base64 else 0.0
        for i in range(5):
            stats[4 + i] = <float>(<double>kinds[i + 1] / <double>size)
        # size - len(data without specials), as the definition writes it: 1.0 for an empty text
        stats[9] = <float>(<double>(size - (n_bytes - specials)) / <double>size)
        stats[10] = <float>(entropy / 8.0)
        stats[11] = <float>self._case_switches(raw, raw_length)
        stats[12] = <float>_at_most_one(<double>_escapes(raw, raw_length) / <double>(raw_length or 1) * 4.0)
        stats[13] = <float>(<double>counts[self.word_class] / <double>token_total)
        stats[14] = <float>(<double>quotes / <double>token_total)
        return out

    cdef double _case_switches(self, str raw, Py_ssize_t length) except? -1.0:
        """`features._case_switches`: case changes between ASCII letters in the first 1,024 characters.
        The definition's early 0.0 for a lower- or upper-case value is what the count gives there too
        (no "Aa" or "aA" without both cases), so it is not tested here."""
        if not length:
            return 0.0
        PyUnicode_READY(raw)
        cdef int kind = PyUnicode_KIND(raw)
        cdef void* data = PyUnicode_DATA(raw)
        cdef Py_ssize_t i, switches = 0, end = length if length < CASE_CHARS else CASE_CHARS
        cdef unsigned char shape, before = 0
        cdef unsigned int c
        cdef const unsigned char* latin1 = <const unsigned char*>data
        if kind == PyUnicode_1BYTE_KIND:  # the common case, read without PyUnicode_READ's switch
            for i in range(end):
                shape = self.case[latin1[i]]  # a non-ASCII byte has '?''s shape, as encode's "replace" gives
                # Shapes are '.', 'A' and 'a': 'A' ^ 'a' == 32, '.' ^ 'A' and '.' ^ 'a' are not.
                switches += (before ^ shape) == 32
                before = shape
            return _at_most_one(<double>switches / <double>length * 4.0)
        for i in range(end):
            c = PyUnicode_READ(kind, data, i)
            shape = self.case[c if c < 128 else 63]  # encode("ascii", "replace"): '?' for the rest
            if (before == 65 and shape == 97) or (before == 97 and shape == 65):  # "Aa", "aA"
                switches += 1
            before = shape
        return _at_most_one(<double>switches / <double>length * 4.0)


cdef inline double _at_most_one(double x) noexcept:
    return 1.0 if 1.0 < x else x  # min(x, 1.0)


cdef Py_ssize_t _escapes(str raw, Py_ssize_t length) except -1:
    """raw.count("%") + raw.count("&") + raw.count("\\\\")."""
    PyUnicode_READY(raw)
    cdef int kind = PyUnicode_KIND(raw)
    cdef void* data = PyUnicode_DATA(raw)
    cdef Py_ssize_t i, found = 0
    cdef unsigned int c
    cdef const unsigned char* latin1 = <const unsigned char*>data
    if kind == PyUnicode_1BYTE_KIND:  # a plain count, which the compiler turns into vector instructions
        for i in range(length):
            c = latin1[i]
            found += (c == 37) | (c == 38) | (c == 92)
        return found
    for i in range(length):
        c = PyUnicode_READ(kind, data, i)
        if c == 37 or c == 38 or c == 92:
            found += 1
    return found


cdef class Combiner:
    """`combine(fields, dropped)`: `features.python_combine`, the request vector from its fields'
    contributions (n-gram positions set to 1, classes maxed, statistics maxed and minned over fields)."""

    cdef Py_ssize_t n_features, n_cls, n_dense, cls0, max0, min0, req0, n_log1p
    cdef float log1p_fields[1025]
    cdef object zeros, float32, log1p

    def __init__(self, *, n_features: int, n_cls: int, n_stats: int, cls0: int, max0: int, min0: int, req0: int,
                 log1p_fields: list, zeros, float32, log1p) -> None:
        if not (0 <= cls0 and cls0 + n_cls <= n_features and max0 + n_stats <= min0 and min0 + n_stats <= req0
                and req0 + 2 == n_features):
            raise ValueError("screening/contribution.pyx lays the vector out otherwise than features.NAMES")
        if len(log1p_fields) > 1025:
            raise ValueError("log1p_fields: at most 1,025 values")
        self.n_features, self.n_cls, self.n_dense = n_features, n_cls, n_cls + n_stats
        self.cls0, self.max0, self.min0, self.req0 = cls0, max0, min0, req0
        self.n_log1p = len(log1p_fields)
        for i, value in enumerate(log1p_fields):
            self.log1p_fields[i] = value
        self.zeros, self.float32, self.log1p = zeros, float32, log1p

    def combine(self, fields, dropped=0):
        """The request vector, float32 of length `features.N_FEATURES`."""
        vector = self.zeros(self.n_features, self.float32)
        cdef Py_ssize_t n = len(fields)
        if not n:
            return vector
        cdef Py_buffer view
        PyObject_GetBuffer(vector, &view, PyBUF_WRITABLE)  # the new array's own block (no memoryview made)
        try:
            if view.len != self.n_features * <Py_ssize_t>sizeof(float):
                raise ValueError("zeros made another vector than n_features float32")
            self._fill(<float*>view.buf, fields, n, dropped)
        finally:
            PyBuffer_Release(&view)
        return vector

    cdef int _fill(self, float* out, fields, Py_ssize_t n, dropped) except -1:
        cdef Py_ssize_t i, j, count, position, n_cls = self.n_cls, n_stats = self.n_dense - self.n_cls
        cdef bytes grams, dense
        cdef const Py_ssize_t* positions
        cdef const float* values
        cdef float value
        cdef float* top_classes = out + self.cls0
        cdef float* top_stats = out + self.max0
        cdef float* least_stats = out + self.min0
        for i in range(n):
            field = fields[i]
            grams = field.grams_bytes
            dense = field.dense_bytes
            if len(dense) != self.n_dense * <Py_ssize_t>sizeof(float) or len(grams) % sizeof(Py_ssize_t):
                raise ValueError("a field's contribution is not the size of features.FieldVector's")
            positions = <const Py_ssize_t*>PyBytes_AS_STRING(grams)
            count = len(grams) // <Py_ssize_t>sizeof(Py_ssize_t)
            for j in range(count):
                position = positions[j]
                if position < 0 or position >= self.n_features:
                    raise IndexError(f"n-gram position {position} outside the vector")
                out[position] = 1.0
            values = <const float*>PyBytes_AS_STRING(dense)
            if i == 0:
                for j in range(n_cls):
                    top_classes[j] = values[j]
                for j in range(n_stats):
                    top_stats[j] = least_stats[j] = values[n_cls + j]
            else:  # no value is NaN or -0.0 (counts' log1p, ratios, entropy), so max and min are numpy's
                # (written as selects, which the compiler turns into vector instructions)
                for j in range(n_cls):
                    value = values[j]
                    top_classes[j] = value if value > top_classes[j] else top_classes[j]
                for j in range(n_stats):
                    value = values[n_cls + j]
                    top_stats[j] = value if value > top_stats[j] else top_stats[j]
                    least_stats[j] = value if value < least_stats[j] else least_stats[j]
        out[self.req0] = self.log1p_fields[n] if n < self.n_log1p else <float>(<double>self.log1p(n))
        out[self.req0 + 1] = 1.0 if dropped else 0.0
        return 0
