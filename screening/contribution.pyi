"""Types of the compiled contribution (`contribution.pyx`), for mypy."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from screening.features import FieldVector

class Contributor:
    def __init__(
        self, *, n_classes: int, bigram_at: np.ndarray, trigram_at: np.ndarray, role3_of_trigram: np.ndarray,
        role3r_of_trigram: np.ndarray, role: np.ndarray, role4_at: np.ndarray, log1p_bytes: bytes,
        xlogx: list[float], kind_table: bytes, case_table: bytes, special_bytes: bytes, max_rounds: int,
        word_class: int, quote_classes: tuple[int, int, int], n_stats: int,
    ) -> None: ...
    def contribution(self, text: str, raw: str, rounds: int, base64: bool, classes: list[int]) -> tuple[bytes, bytes]: ...

class Combiner:
    def __init__(
        self, *, n_features: int, n_cls: int, n_stats: int, cls0: int, max0: int, min0: int, req0: int,
        log1p_fields: list[np.float32], zeros: Any, float32: Any, log1p: Any,
    ) -> None: ...
    def combine(self, fields: Sequence[FieldVector], dropped: int = 0) -> np.ndarray: ...
