"""How a screening verdict is told: the block's problem body, its reason category, rounded figures.

Called by `gateway.policies.screening.policy` once a request is scored: `_round4` for the access log
note on every request, `category` and `problem` when a request is flagged or blocked. A block says
why by category (`sql-injection`, `scanner`...), never the score or the model's internals.
"""

from __future__ import annotations

import orjson

from screening.rounding import round_places

PROBLEM_TYPE = "https://portcullis.dev/problems/request-blocked"


_CATEGORIES = (
    ("sql_", "sql-injection"), ("html", "cross-site-scripting"), ("event_handler", "cross-site-scripting"),
    ("js_", "cross-site-scripting"), ("shell", "command-injection"), ("path_", "path-traversal"),
    ("internal_host", "server-side-request-forgery"), ("rare_scheme", "server-side-request-forgery"),
    ("xml", "xml-external-entity"), ("entity_ref", "xml-external-entity"), ("tpl_", "template-injection"),
    ("py_dunder", "template-injection"), ("jndi", "jndi-injection"), ("lookup_default", "jndi-injection"),
    ("ldap", "ldap-injection"), ("xpath", "xpath-injection"), ("nosql", "nosql-injection"),
    ("crlf", "header-injection"), ("deser", "deserialization"), ("scanner", "scanner"), ("scan_path", "scanner"),
    ("dollar_brace", "template-injection"),
)


_ROUNDED: dict[float, float] = {}  # score or threshold -> round(x, 4)


def _round4(x: float) -> float:
    """`round(x, 4)`, remembered (thresholds repeat on every request, scores of repeated requests too)."""
    found = _ROUNDED.get(x)
    if found is None:
        found = round_places(x, 4, 10000.0)
        if x and type(x) is float:  # 0.0 and -0.0 are one key but round apart; numpy floats round apart
            if len(_ROUNDED) >= 4096:
                _ROUNDED.clear()
            _ROUNDED[x] = found
    return found


def category(feature_names: list[str]) -> str:
    """A reason category for a block, from the names of its top features (never the score itself)."""
    for name in feature_names:
        for marker, label in _CATEGORIES:
            if marker in name:
                return label
    return "anomalous-request"


def problem(request_id: str, reason: str) -> bytes:
    return orjson.dumps({
        "type": PROBLEM_TYPE,
        "title": "Request blocked",
        "status": 403,
        "detail": "The request was refused by the gateway's request screening.",
        "request_id": request_id,
        "category": reason,
    })
