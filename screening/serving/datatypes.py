"""Tensor datatypes: the protocol's names, their numpy and ONNX types, and tensor data in and out.

The Open Inference Protocol names BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BF16 and
BYTES. onnxruntime's Python API takes all but BF16 (numpy has no bfloat16), so BF16 is refused as
an unsupported datatype. Fixed-size data travels as little-endian bytes (the binary extension,
`raw_input_contents`) or as JSON numbers; BYTES elements each travel as a 4-byte little-endian
length and the bytes. An ONNX string tensor holds text: BYTES data must be UTF-8, and is held as a
numpy object array of `str` between the codecs and onnxruntime.

Pure functions over numpy; every malformed input raises `InvalidInput` naming the tensor.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from screening.serving.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class DataType:
    name: str  # the protocol's name
    dtype: np.dtype[Any]  # little-endian numpy type; object for BYTES
    onnx: str  # onnxruntime's type string, e.g. "tensor(float)"

    @property
    def fixed_size(self) -> bool:
        return self.name != "BYTES"


def _dt(name: str, dtype: str, onnx: str) -> DataType:
    return DataType(name, np.dtype(dtype), f"tensor({onnx})")


DATATYPES: dict[str, DataType] = {
    t.name: t
    for t in (
        _dt("BOOL", "?", "bool"),
        _dt("UINT8", "<u1", "uint8"),
        _dt("UINT16", "<u2", "uint16"),
        _dt("UINT32", "<u4", "uint32"),
        _dt("UINT64", "<u8", "uint64"),
        _dt("INT8", "<i1", "int8"),
        _dt("INT16", "<i2", "int16"),
        _dt("INT32", "<i4", "int32"),
        _dt("INT64", "<i8", "int64"),
        _dt("FP16", "<f2", "float16"),
        _dt("FP32", "<f4", "float"),
        _dt("FP64", "<f8", "double"),
        _dt("BYTES", "O", "string"),
    )
}
BY_ONNX: dict[str, DataType] = {t.onnx: t for t in DATATYPES.values()}
PROTOCOL_ONLY = frozenset({"BF16"})  # named by the protocol, not servable through onnxruntime's Python API


def datatype(name: object, tensor: str) -> DataType:
    """The `DataType` of a protocol name; `InvalidInput` for anything else."""
    found = DATATYPES.get(name) if isinstance(name, str) else None
    if found is None:
        if name in PROTOCOL_ONLY:
            raise InvalidInput(f"tensor '{tensor}': datatype {name} is not supported by this server")
        raise InvalidInput(f"tensor '{tensor}': unknown datatype {name!r}")
    return found


def check_shape(shape: object, tensor: str) -> tuple[int, ...]:
    """A request's shape: a list of non-negative integers."""
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"tensor '{tensor}': shape must be a list of non-negative integers, got {shape!r}")
    return tuple(shape)


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


# --- raw bytes (binary extension, raw_input_contents) ---------------------------------------------
def from_raw(dt: DataType, shape: tuple[int, ...], raw: bytes | memoryview, tensor: str) -> np.ndarray:
    count = element_count(shape)
    if dt.fixed_size:
        expected = count * dt.dtype.itemsize
        if len(raw) != expected:
            raise InvalidInput(
                f"tensor '{tensor}': {len(raw)} bytes of data for shape {list(shape)} of {dt.name} "
                f"({expected} expected)"
            )
        array = np.frombuffer(raw, dtype=dt.dtype).reshape(shape)
        if dt.name == "BOOL" and array.view(np.uint8).max(initial=0) > 1:
            raise InvalidInput(f"tensor '{tensor}': BOOL bytes must be 0 or 1")
        return array
    return _text_array(_split_bytes(raw, count, tensor), shape, tensor)


def _split_bytes(raw: bytes | memoryview, count: int, tensor: str) -> list[bytes]:
    view = memoryview(raw)
    out: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidInput(f"tensor '{tensor}': BYTES data ends inside an element's length")
        (size,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + size > len(view):
            raise InvalidInput(f"tensor '{tensor}': BYTES element longer than the data left")
        out.append(bytes(view[offset : offset + size]))
        offset += size
    if len(out) != count:
        raise InvalidInput(f"tensor '{tensor}': {len(out)} BYTES elements for a shape of {count}")
    return out


def _text_array(items: Sequence[bytes | str], shape: tuple[int, ...], tensor: str) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(
                    f"tensor '{tensor}': element {i} is not UTF-8, which an ONNX string tensor needs"
                ) from None
        array[i] = item
    return array.reshape(shape)


def to_raw(array: np.ndarray, dt: DataType) -> bytes:
    if dt.fixed_size:
        return np.ascontiguousarray(array, dtype=dt.dtype).tobytes()
    parts = []
    for item in array.reshape(-1):
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def bytes_elements(array: np.ndarray) -> list[bytes]:
    """A BYTES tensor's elements as bytes (for `bytes_contents`)."""
    return [item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in array.reshape(-1)]


# --- JSON (and typed repeated fields) -------------------------------------------------------------
def from_values(dt: DataType, shape: tuple[int, ...], data: object, tensor: str) -> np.ndarray:
    """Row-major data, flat or nested, as given in JSON (or a typed repeated field) -> array of `shape`."""
    count = element_count(shape)
    if not isinstance(data, list | tuple | np.ndarray) and not hasattr(data, "__len__"):
        raise InvalidInput(f"tensor '{tensor}': data must be a list")
    if not dt.fixed_size:
        flat = _flatten(data)
        if len(flat) != count:
            raise InvalidInput(f"tensor '{tensor}': {len(flat)} elements of data for shape {list(shape)}")
        if not all(isinstance(v, str | bytes) for v in flat):
            raise InvalidInput(f"tensor '{tensor}': BYTES data must be strings")
        return _text_array(flat, shape, tensor)
    if count == 0:
        if len(_flatten(data)) != 0:
            raise InvalidInput(f"tensor '{tensor}': data given for an empty shape {list(shape)}")
        return np.zeros(shape, dtype=dt.dtype)
    try:
        given = np.asarray(data)
    except ValueError:  # ragged nesting
        raise InvalidInput(f"tensor '{tensor}': data is not a regular (row-major) array") from None
    if given.size != count:
        raise InvalidInput(f"tensor '{tensor}': {given.size} elements of data for shape {list(shape)}")
    kind = given.dtype.kind
    if dt.name == "BOOL":
        if kind != "b":
            raise InvalidInput(f"tensor '{tensor}': BOOL data must be true or false")
    elif dt.dtype.kind in "iu":
        # numpy infers float64 for integers beyond int64 (large UINT64 values): convert from the
        # Python values themselves, which numpy range-checks, and refuse true fractions.
        if kind not in "iuf":
            raise InvalidInput(f"tensor '{tensor}': {dt.name} data must be integers")
        try:
            exact = np.array(data, dtype=dt.dtype)
        except (OverflowError, ValueError, TypeError):
            raise InvalidInput(f"tensor '{tensor}': a value is out of the range of {dt.name}") from None
        if kind == "f" and not np.array_equal(exact.astype(np.float64), given):
            raise InvalidInput(f"tensor '{tensor}': {dt.name} data must be integers")
        return exact.reshape(shape)
    elif kind not in "iuf":
        raise InvalidInput(f"tensor '{tensor}': {dt.name} data must be numbers")
    return given.astype(dt.dtype, copy=False).reshape(shape)


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, np.ndarray):
        return list(data.reshape(-1))
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list | tuple):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def to_values(array: np.ndarray, dt: DataType, tensor: str) -> list[Any]:
    """Flat row-major values for JSON; BYTES as text."""
    if dt.fixed_size:
        return array.reshape(-1).tolist()  # type: ignore[no-any-return]
    out: list[Any] = []
    for item in array.reshape(-1):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"output '{tensor}' is not UTF-8: ask for it with binary_data") from None
        out.append(item)
    return out
