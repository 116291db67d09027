"""`round_places`: `round(x, places)` for the figures screening logs, without its decimal conversion.

Used by `screening.top_features` (contributions, 3 places) and the screening policy's access-log note
(score and threshold, 4 places). Python's float `round` with a number of places converts the float to
decimal digits and back (about 3.5k instructions); for a positive figure below 100 whose scaled
fraction is not near one half, the rounded integer is unambiguous and one division gives the same
float (both are the double nearest to that integer over the scale, the division being correctly
rounded). Anything else, near-ties included, goes to `round` itself.
"""

from __future__ import annotations

from math import floor

_MARGIN = 1e-6  # far above the error of x * scale (below 1e-10 for x < 100), far below one half


def round_places(x: float, places: int, scale: float) -> float:
    """`round(x, places)`; `scale` is `10.0 ** places` (passed, so that it is not worked out per call)."""
    if type(x) is float and 0.0 < x < 100.0 and places <= 4:  # a numpy float rounds to a numpy float
        scaled = x * scale
        whole = floor(scaled)
        fraction = scaled - whole  # exact: both below 2**53 and within one of each other
        if fraction < 0.5 - _MARGIN:
            return whole / scale
        if fraction > 0.5 + _MARGIN:
            return (whole + 1) / scale
    return round(x, places)
