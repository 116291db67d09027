"""The feature rows of a request on a route with field rules (`fields` in `ScreeningConfig`).

Called by `gateway.policies.screening.policy` when a route names fields: the request's record without
its skipped and separately scored fields makes one row, and each field scored on its own makes one
more, against its own threshold. Routes without field rules never come here (the values alone).
"""

from __future__ import annotations

import numpy as np

from gateway.policies.screening.config import ScreeningConfig
from screening import features, record


def _rows_by_field(rec: record.RequestRecord, cfg: ScreeningConfig, threshold: float,
                   ) -> tuple[list[np.ndarray], list[float], list[list[str]]]:
    """Feature rows when the route has field rules: the request without its special fields, then one
    row per field scored on its own against its own threshold."""
    main: list[str] = []
    own: list[tuple[str, float]] = []
    for field in rec.fields():
        rule = cfg.fields.get(field.name)
        if rule is None:
            main.append(field.value)
            if field.location == "query" and not record.plain_query_key(field.key):
                main.append(field.key)
        elif rule.skip:
            continue
        elif rule.threshold is not None:
            own.append((field.value, rule.threshold))
        else:
            main.append(field.value)
    rows, thresholds, row_values = [], [], []
    if main:
        rows.append(features.combine(features.field_vectors(main), rec.dropped))
        thresholds.append(threshold)
        row_values.append(main)
    for value, field_threshold in own:
        rows.append(features.combine(features.field_vectors([value])))
        thresholds.append(field_threshold)
        row_values.append([value])
    return rows, thresholds, row_values
