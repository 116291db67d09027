"""Types of the compiled value path (`field_path.pyx`), for mypy."""

from collections.abc import Callable, Sequence
from typing import Any

from screening.features import FieldVector

def plain(value: str | bytes, max_chars: int) -> str | None: ...

class FieldPath:
    cached: Any  # functools.lru_cache of value_vectors
    def __init__(
        self, *, classes: Callable[[str], list[int]], contribution: Callable[..., tuple[bytes, bytes]],
        field_vector: type[FieldVector], normalize_with_rounds: Callable[[str | bytes], tuple[str, int]],
        base64_text: Callable[[str], str | None], lru_cache: Callable[..., Any], cache_size: int, cache_chars: int,
        max_chars: int,
    ) -> None: ...
    def field_vectors(self, raw_values: Sequence[str]) -> list[FieldVector]: ...
    def value_vectors(self, raw: str) -> tuple[FieldVector, ...]: ...
