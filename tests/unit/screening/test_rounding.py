"""`round_places` is `round(x, places)`, bit for bit, on every float: the fast division away from a tie,
`round` itself near one, outside (0, 100) and for numpy floats."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from screening.rounding import round_places


def _same(a: float, b: float) -> bool:
    return type(a) is type(b) and struct.pack("d", a) == struct.pack("d", b)


@given(x=st.one_of(st.floats(allow_nan=False), st.floats(0, 100), st.integers(0, 10**6).map(lambda k: k / 10**4),
                   st.integers(0, 10**6).map(lambda k: (k + 0.5) / 10**4), st.integers(0, 10**5).map(lambda k: (k + 0.5) / 10**3),
                   st.floats(0, 1, width=32)))
@example(x=0.00005)
@example(x=0.0)
@example(x=-0.0)
@example(x=99.99995)
@example(x=2.675)  # 2.67499999999999982236431605997495353221893310546875: rounds down
def test_round_places_is_round(x: float) -> None:
    for places, scale in ((3, 1000.0), (4, 10000.0)):
        assert _same(round_places(x, places, scale), round(x, places))


def test_numpy_floats_round_as_numpy_floats() -> None:
    x = np.float64(0.123456)
    assert _same(round_places(x, 4, 10000.0), round(x, 4))  # type: ignore[arg-type]
    assert type(round_places(x, 4, 10000.0)) is np.float64  # type: ignore[arg-type]
