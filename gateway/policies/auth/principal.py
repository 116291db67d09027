"""How an authentication outcome is written on the `Call`: the principal granted, or the failure.

`grant` sets who is calling (consumer, scopes, claims, tier) and the metadata the backend receives
about them; `protect` hides the client headers that could forge that metadata (a client sending
`Grpc-Metadata-X-Consumer-Id` must not speak for the gateway); `reject` notes a failure reason
from one small, fixed set (a metric label, so never free text) and returns the `GatewayError` to
raise. A reason is left in `call.attributes["auth_failure"]`, which the access log prints, and is
counted in `portcullis_auth_failures_total{reason}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import grpc

from gateway.call import Call
from gateway.metrics_registry import AUTH_FAILURES
from translators.errors import GatewayError

Reason = Literal[
    "missing_credentials",  # no key or token where one is required
    "unknown_key",
    "revoked_key",
    "malformed_token",
    "untrusted_issuer",
    "algorithm_not_allowed",
    "unknown_kid",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "bad_audience",
    "missing_claim",
    "invalid_token",  # any other token failure
    "keys_unavailable",  # the issuer's keys could not be fetched: 503, not the client's fault
    "no_principal",  # authorize: nobody authenticated
    "consumer_not_allowed",
    "insufficient_scope",
]


def protected(key: str) -> frozenset[str]:
    """The client headers that would arrive upstream as metadata `key`."""
    return frozenset((key, "grpc-metadata-" + key))


def protect(call: Call, key: str) -> None:
    """Never forward a client header that would arrive upstream as metadata `key`."""
    call.hidden_headers.update(protected(key))


def set_metadata(call: Call, key: str, value: str) -> None:
    """Metadata for the backend, replacing what an earlier auth policy set under the same key."""
    if call.upstream_metadata:
        call.upstream_metadata[:] = [(k, v) for k, v in call.upstream_metadata if k != key]
    call.upstream_metadata.append((key, value))


def grant(
    call: Call,
    consumer: str,
    scopes: frozenset[str],
    consumer_metadata: str | None,
    claims: Mapping[str, Any] | None = None,
    tier: str | None = None,
) -> None:
    call.consumer = consumer
    call.scopes = scopes
    if claims is not None:
        call.claims = dict(claims)
    if tier is not None:
        call.attributes["tier"] = tier  # read by the rate limiter
    if consumer_metadata:
        set_metadata(call, consumer_metadata, consumer)


def reject(
    call: Call,
    reason: Reason,
    message: str,
    code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED,
    headers: Mapping[str, str] | None = None,
) -> GatewayError:
    """The error to raise; `message` goes to the client and the access log, so never a credential."""
    call.attributes["auth_failure"] = reason
    AUTH_FAILURES.labels(reason=reason).inc()
    return GatewayError(code, message, headers=headers)
