"""Screening: score each request with the ONNX model and allow, flag or block it, per route.

The gateway side of `screening/` (the library does the work; this package is transport glue), one
policy in the pipeline. The request head (path, query, selected headers) and its message are screened
together, once: `on_request` only notes the call, and `on_message` (which the REST handler calls with
the request message it built, and the stream and WebSocket handlers call per message) extracts the
screened values (or a `RequestRecord` when the route has field rules), features, and scores them
through the `Scorer`. A WebSocket upgrade is screened in `on_request` (its head), then each message on
its own.

Per route: `mode` (`off`, `monitor`: score and log, never block; `block`), `threshold` (default:
the model manifest's), and `fields`: a field (`body.comment`, `query.q`, `header.user-agent`) can
be skipped, or scored on its own against its own threshold. A block is a 403
`application/problem+json` with `type`, `title`, `status`, `request_id` and a reason `category`;
never the score or the model's internals. A model failure (error, timeout, full queue) lets the
request through when `fail_open`, else answers 503; both are counted.

The access log gets `screening` (verdict, score, threshold, model version, top contributing
features, category) in `call.attributes`; metrics are declared in `gateway.metrics_registry`.
The model lifecycle (activate, rollback, shadow) is driven by the admin API through `activate`,
`rollback` and `set_shadow`; a load happens in a thread and is verified before the swap.

The package, in request order: `config` (`ScreeningConfig`, `FieldRule`: validated at start-up),
`policy` (`Screening`: the phases, scoring, the model lifecycle), `field_rows` (the
feature rows of a route with field rules), `kept_rows` (the repeat memo: requests sent again exactly,
decided from their kept outcome), `verdict` (the block's problem body and reason category),
`tallies` (decisions, scores, durations and memo hits, pushed before a scrape), `observer` (batch
sizes and inference times from the `Scorer`). `build` is the registry's factory.
"""

from __future__ import annotations

from gateway.policies.base import RouteConfigs
from gateway.policies.screening.config import MODEL_KEYS, FieldRule, ScreeningConfig
from gateway.policies.screening.policy import Screening
from gateway.policies.screening.verdict import PROBLEM_TYPE, category, problem

__all__ = ["MODEL_KEYS", "PROBLEM_TYPE", "FieldRule", "Screening", "ScreeningConfig", "build", "category", "problem"]


def build(configs: RouteConfigs[ScreeningConfig]) -> Screening:
    default = configs.default
    for route, cfg in configs.by_route.items():
        for key in MODEL_KEYS:
            if getattr(cfg, key) != getattr(default, key):
                raise ValueError(f"services.{route}.policies.screening.{key}: model settings are global only")
    return Screening(configs)
