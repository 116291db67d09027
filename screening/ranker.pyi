"""Types of the compiled ranking (`ranker.pyx`), for mypy."""

from collections.abc import Callable

import numpy as np

class Ranker:
    def __init__(
        self, *, weights: np.ndarray, baseline: np.ndarray, columns: np.ndarray | None, bound: float,
        names: tuple[str, ...], rounded: dict[float, float], round3: Callable[[float], float],
    ) -> None: ...
    def of(self, vector: np.ndarray, k: int) -> list[tuple[str, float]] | None: ...
