"""`Rows`: a request's features without the wide vector, exactly the vector `features.combine` makes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from screening import features
from screening.rows import DENSE_COLUMNS, N_DENSE, NGRAMS, Rows

VALUES = ("/v1/echo", "Mozilla/5.0 (X11; Linux x86_64)", "1' OR '1'='1' --", "<script>alert(1)</script>",
          "hello", "", "../../etc/passwd", "Tom & Jerry", "aGVsbG8gd29ybGQsIHRoaXMgaXMgYmFzZTY0IHRleHQ=")


def test_the_columns_split_the_vector() -> None:
    ngrams = np.arange(NGRAMS.start, NGRAMS.stop)
    assert N_DENSE == 116 and len(DENSE_COLUMNS) + len(ngrams) == features.N_FEATURES
    assert sorted([*DENSE_COLUMNS.tolist(), *ngrams.tolist()]) == list(range(features.N_FEATURES))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(VALUES), st.text(max_size=60)), max_size=8), st.integers(0, 3))
def test_rows_of_fields_are_the_combined_vector(values: list[str], dropped: int) -> None:
    fields = features.field_vectors(values)
    rows = Rows.of(fields, dropped)
    vector = features.combine(fields, dropped)
    assert rows.wide().tobytes() == vector[None, :].tobytes()
    assert len(rows) == 1 and rows.dense.dtype == np.float32 and rows.dense.shape == (1, N_DENSE)
    grams = rows.grams[0]
    assert grams.tolist() == sorted(set(grams.tolist()))  # each n-gram once, in order
    assert Rows.from_wide(vector).grams[0].tolist() == grams.tolist()
    assert Rows.from_wide(vector).dense.tobytes() == rows.dense.tobytes()


def test_stack_take_and_index() -> None:
    parts = [Rows.of(features.field_vectors([value])) for value in VALUES]
    batch = Rows.stack(parts)
    assert len(batch) == len(VALUES)
    wide = batch.wide()
    for i, part in enumerate(parts):
        assert batch[i].wide().tobytes() == part.wide().tobytes() == wide[i : i + 1].tobytes()
    assert batch.take(2, 5).wide().tobytes() == wide[2:5].tobytes()
    assert Rows.stack(parts[:1]) is parts[0]


def test_top_contributions_takes_a_row() -> None:
    rng = np.random.default_rng(1)
    weights = rng.normal(size=features.N_FEATURES).astype(np.float32)
    values = list(VALUES)
    row = Rows.of(features.field_vectors(values))
    assert features.top_contributions(row, weights, 6, values) == features.top_contributions(
        row.wide()[0], weights, 6, values)
