# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The compiled ranking of a row's top contributions: `top_features.python_of` in C, the same list.

`top_features.py` is the definition (a gather of the candidate columns, a float32 subtract-multiply, an
argmax per feature, the bound check, the whole row when the candidates cannot settle it); this module
is an accelerator it uses when it is built. It reads the row once, through its buffer, and keeps the
`k` best in a small sorted array instead of making numpy calls per feature. It is exact, not close:
each contribution is the same two float32 operations numpy does (`x - baseline`, then `* weight`,
each rounded to float32), a tie goes to the lower column as argmax's first maximum does, a NaN ends
the ranking where argmax would have returned it (before anything is taken, since argmax returns a
NaN first), and the values are rounded by the definition's own memo and function.
"""

from cpython.buffer cimport PyBUF_FORMAT, PyBUF_STRIDES, PyObject_GetBuffer, PyBuffer_Release
from cpython.bytes cimport PyBytes_AS_STRING
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

cdef extern from "math.h":
    bint isnan(double x) nogil

cdef enum:
    MOST = 8  # the definition sends larger counts to `features.top_contributions`


cdef bytes _floats(object array, Py_ssize_t size, str name):
    if str(array.dtype) != "float32" or array.ndim != 1 or array.shape[0] != size:
        raise ValueError(f"{name}: expected {size} float32 values, got {array.shape} of {array.dtype}")
    return array.tobytes()


cdef class Ranker:
    """`of(vector, k)`: a float32 row's `k` (at most 8) largest positive contributions, or None for a row
    it does not read (another dtype or length, not contiguous), which the definition ranks."""

    cdef Py_ssize_t n_features, n_part
    cdef double bound
    cdef bytes keep_weights, keep_baseline, keep_columns, keep_part_weights, keep_part_baseline
    cdef const float* weights
    cdef const float* baseline
    cdef const Py_ssize_t* columns
    cdef const float* part_weights
    cdef const float* part_baseline
    cdef tuple names
    cdef dict rounded
    cdef object round3
    # Per column, the last (name, rounded value) made and its value's float32 bits: an allowed request's
    # top features are mostly the same columns with the same values, so the pair is made once.
    cdef list made
    cdef unsigned int* made_bits

    def __dealloc__(self) -> None:
        free(self.made_bits)

    def __init__(self, *, weights, baseline, columns, bound: float, names: tuple, rounded: dict, round3) -> None:
        self.n_features = len(names)
        self.keep_weights = _floats(weights, self.n_features, "weights")
        self.keep_baseline = _floats(baseline, self.n_features, "baseline")
        self.weights = <const float*>PyBytes_AS_STRING(self.keep_weights)
        self.baseline = <const float*>PyBytes_AS_STRING(self.keep_baseline)
        if columns is None:  # no candidates: every row is ranked whole
            columns = weights[:0].astype("intp")
        if columns.dtype.kind != "i" or columns.dtype.itemsize != sizeof(Py_ssize_t) or columns.ndim != 1:
            raise ValueError("columns: column indexes (intp) expected")
        if len(columns) and (columns.min() < 0 or columns.max() >= self.n_features):
            raise ValueError("columns: an index outside the row")
        self.n_part = len(columns)
        self.keep_columns = columns.tobytes()
        self.columns = <const Py_ssize_t*>PyBytes_AS_STRING(self.keep_columns)
        self.keep_part_weights = weights[columns].tobytes()
        self.keep_part_baseline = baseline[columns].tobytes()
        self.part_weights = <const float*>PyBytes_AS_STRING(self.keep_part_weights)
        self.part_baseline = <const float*>PyBytes_AS_STRING(self.keep_part_baseline)
        self.bound = bound
        self.names, self.rounded, self.round3 = names, rounded, round3
        self.made = [None] * self.n_features
        self.made_bits = <unsigned int*>calloc(self.n_features, sizeof(unsigned int))
        if self.made_bits == NULL:
            raise MemoryError()

    def of(self, vector, Py_ssize_t k):
        """The definition's `of(vector, k)` for 0 < k <= 8, or None when `vector` is not a float32 row of
        the model's length in one block."""
        cdef Py_buffer view
        if not 0 < k <= MOST:
            return None
        try:  # strides asked for: any array gives its buffer, and the layout is checked below
            PyObject_GetBuffer(vector, &view, PyBUF_STRIDES | PyBUF_FORMAT)
        except (BufferError, TypeError, ValueError):
            return None
        cdef Py_ssize_t[MOST] found
        cdef float[MOST] values
        cdef Py_ssize_t count
        cdef const float* row = <const float*>view.buf
        try:
            if (view.ndim != 1 or view.itemsize != 4 or view.format == NULL or view.format[0] != b"f"
                    or view.format[1] != 0 or view.shape[0] != self.n_features or view.strides[0] != 4):
                return None
            if self.n_part:
                count = _top(row, self.columns, self.part_baseline, self.part_weights, self.n_part, k, found,
                             values)
                # Complete when the k-th is above every column left out, or when fewer than k are positive
                # and no column left out can be.
                if (values[k - 1] > self.bound) if count == k else (self.bound <= 0):
                    return self._named(found, values, count)
            count = _top(row, NULL, self.baseline, self.weights, self.n_features, k, found, values)
            return self._named(found, values, count)
        finally:
            PyBuffer_Release(&view)

    cdef list _named(self, const Py_ssize_t* found, const float* values, Py_ssize_t count):
        cdef list out = []
        cdef Py_ssize_t i, column
        cdef unsigned int bits
        cdef object value, rounded, pair
        for i in range(count):
            column = found[i]
            memcpy(&bits, &values[i], sizeof(float))
            pair = self.made[column]
            if pair is None or self.made_bits[column] != bits:
                value = <double>values[i]  # the float32 as a Python float, as `item` gives it
                rounded = self.rounded.get(value)
                if rounded is None:
                    rounded = self.round3(value)
                pair = self.made[column] = (self.names[column], rounded)
                self.made_bits[column] = bits
            out.append(pair)
        return out


cdef Py_ssize_t _top(const float* row, const Py_ssize_t* columns, const float* baseline, const float* weights,
                     Py_ssize_t n, Py_ssize_t k, Py_ssize_t* found, float* values) noexcept:
    """The `k` largest positive `(row[c] - baseline[i]) * weights[i]` over `i < n` (`c` the i-th column,
    or `i` itself without columns), largest first, a tie to the earlier; their columns in `found`. A NaN
    anywhere means none: argmax returns a NaN before any number, and the definition stops there."""
    cdef Py_ssize_t i, count = 0
    cdef float contribution, floor = 0  # what a contribution must exceed to be taken: 0, then the k-th
    if columns != NULL:
        for i in range(n):
            contribution = row[columns[i]] - baseline[i]
            contribution = contribution * weights[i]
            if not contribution <= floor:  # above the floor, or NaN
                if isnan(contribution):
                    return 0
                count = _take(contribution, columns[i], count, k, found, values)
                if count == k:
                    floor = values[k - 1]
    else:
        for i in range(n):
            contribution = row[i] - baseline[i]
            contribution = contribution * weights[i]
            if not contribution <= floor:
                if isnan(contribution):
                    return 0
                count = _take(contribution, i, count, k, found, values)
                if count == k:
                    floor = values[k - 1]
    return count


cdef Py_ssize_t _take(float contribution, Py_ssize_t column, Py_ssize_t count, Py_ssize_t k, Py_ssize_t* found,
                      float* values) noexcept:
    """Insert a contribution above the floor among the `count` taken; the new count."""
    cdef Py_ssize_t j = count if count < k else k - 1
    while j > 0 and values[j - 1] < contribution:  # strictly: an equal value stays ahead
        values[j] = values[j - 1]
        found[j] = found[j - 1]
        j -= 1
    values[j] = contribution
    found[j] = column
    return count + 1 if count < k else count
