"""JWT bearer tokens (`jwt`): verify `Authorization: Bearer <token>` against trusted issuers.

The token's `iss` picks one configured issuer, and everything else is that issuer's: the algorithms
it may use (pinned: never `none`, never HS* and asymmetric ones for one issuer, and a key only
verifies the algorithms of its own type), where its keys come from (a JWKS file or URL, or a secret
named by an environment variable), the audiences accepted and the clock leeway. `exp`, `iss` and
`aud` are required; `nbf` and `iat` are checked when present. Verification is done by PyJWT.

A valid token makes its subject the caller: `call.consumer` (the `sub` claim or another configured
one), `call.scopes` from `scope` (space-separated) or `scp` (a list or a string), `call.claims`, and
the claims named in `forward_claims` sent upstream as metadata (client headers that would forge
them are never forwarded). Any failure is a 401 whose `WWW-Authenticate: Bearer error="invalid_token",
error_description="..."` and body say what failed in fixed words, never echoing the token or its
contents; an issuer whose keys cannot be fetched at all makes it a 503.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import string
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import grpc
import jwt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.call import Call
from gateway.policies.auth.jwks import (
    JwksUrlSource,
    KeySource,
    KeysUnavailable,
    SecretSource,
    jwks_file_source,
    read_jwks_file,
)
from gateway.policies.auth.principal import Reason, grant, protect, reject, set_metadata
from gateway.policies.base import BasePolicy, PolicyConfig, RouteConfigs

Algorithm = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA",
]
ALGORITHMS: frozenset[str] = frozenset(Algorithm.__args__)  # type: ignore[attr-defined]
# RFC 7518 3.2: an HMAC key at least as long as the hash output.
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
METADATA_KEY = r"^[a-z0-9_.-]+$"
_SAFE = "".join(c for c in string.printable if c not in "%\t\n\r\x0b\x0c")


class IssuerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1, description="The `iss` value tokens of this issuer carry, exactly.")
    audiences: tuple[str, ...] = Field(min_length=1, description="`aud` values accepted; one must match.")
    algorithms: tuple[Algorithm, ...] = Field(min_length=1, description="Algorithms this issuer signs with.")
    jwks_file: Path | None = Field(None, description="A JWKS document on disk.")
    jwks_url: str | None = Field(None, description="A JWKS endpoint (https; http only on loopback).")
    secret_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Environment variable holding the HS* secret."
    )
    leeway_s: float = Field(30.0, ge=0, le=300, description="Clock skew tolerated on exp, nbf and iat.")
    consumer_claim: str = Field("sub", min_length=1, description="Claim naming the consumer.")
    required_claims: tuple[str, ...] = Field((), description="Claims required besides exp, iss, aud.")
    cache_ttl_s: float = Field(300.0, ge=1, le=86400, description="How often the JWKS is refetched.")
    refetch_interval_s: float = Field(
        10.0, ge=0.1, le=3600, description="Least time between two fetches, e.g. on unknown kids."
    )
    timeout_ms: int = Field(3000, ge=1, le=60000, description="Deadline of one JWKS fetch.")

    @field_validator("algorithms", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            for name in value:
                if isinstance(name, str) and name.lower() == "none":
                    raise ValueError("'none' is never accepted: tokens must be signed")
                if name not in ALGORITHMS:
                    raise ValueError(f"unknown algorithm {name!r}; expected some of {', '.join(sorted(ALGORITHMS))}")
        return value

    @field_validator("jwks_file")
    @classmethod
    def _jwks_readable(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_jwks_file(value)  # ValueError names the file and the problem
        return value

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
            return value
        raise ValueError("must be an https URL (plain http only to a loopback address)")

    @model_validator(mode="after")
    def _one_source(self) -> IssuerConfig:
        given = [n for n in ("jwks_file", "jwks_url", "secret_env") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of jwks_file, jwks_url, secret_env")
        hmac_algs = [a for a in self.algorithms if a.startswith("HS")]
        if self.secret_env is not None:
            if len(hmac_algs) != len(self.algorithms):
                raise ValueError("with secret_env, algorithms must all be HS256/HS384/HS512")
            secret = os.environ.get(self.secret_env)
            if not secret:
                raise ValueError(f"secret_env: environment variable {self.secret_env} is not set")
            need = max(MIN_SECRET_BYTES[a] for a in hmac_algs)
            if len(secret.encode()) < need:
                raise ValueError(f"secret_env: the secret in {self.secret_env} is shorter than {need} bytes")
        elif hmac_algs:
            raise ValueError("HS* algorithms need secret_env; a JWKS issuer signs with asymmetric keys only")
        return self


class JwtConfig(PolicyConfig):
    enabled: bool = Field(True, description="Require a valid bearer token on these routes.")
    issuers: tuple[IssuerConfig, ...] = Field(min_length=1, description="Trusted issuers, by `iss`.")
    hide_credentials: bool = Field(True, description="Do not forward the Authorization header upstream.")
    anonymous: bool = Field(
        False, description="Let requests without a token through unauthenticated (an invalid token still fails)."
    )
    forward_claims: dict[str, str] = Field(
        default_factory=dict, description="Claim name -> metadata key the backend receives it under."
    )
    consumer_metadata: str | None = Field(
        "x-consumer-id", description="Metadata key carrying the consumer upstream; null to not send it."
    )
    tier_claim: str | None = Field(None, description="Claim holding the rate-limit tier, if any.")
    max_token_bytes: int = Field(8192, ge=256, le=65536, description="Longer tokens are refused unparsed.")

    @field_validator("issuers")
    @classmethod
    def _distinct(cls, value: tuple[IssuerConfig, ...]) -> tuple[IssuerConfig, ...]:
        names = [i.issuer for i in value]
        if len(names) != len(set(names)):
            raise ValueError("two issuers share one `issuer` value")
        return value

    @field_validator("forward_claims")
    @classmethod
    def _metadata_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for claim, key in value.items():
            _check_metadata_key(key, f"forward_claims.{claim}")
        return value

    @field_validator("consumer_metadata")
    @classmethod
    def _consumer_key(cls, value: str | None) -> str | None:
        if value is not None:
            _check_metadata_key(value, "consumer_metadata")
        return value


def _check_metadata_key(key: str, where: str) -> None:
    if not re.match(METADATA_KEY, key) or key.startswith("grpc-") or key.endswith("-bin"):
        raise ValueError(f"{where}: {key!r} is not a metadata key (lower-case, not grpc-*, not *-bin)")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Invalid(Exception):
    """A token refused: the reason (a metric label) and fixed words for the client."""

    def __init__(self, reason: Reason, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description.replace('"', "'").replace("\\", "")

    @property
    def challenge(self) -> str:
        return f'Bearer error="invalid_token", error_description="{self.description}"'


# PyJWT's exceptions -> (reason, the words the client sees). Subclasses come before their bases.
_FAILURES: tuple[tuple[type[jwt.PyJWTError], Reason, str], ...] = (
    (jwt.ExpiredSignatureError, "expired", "the token has expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "the token is not valid yet"),
    (jwt.InvalidAudienceError, "bad_audience", "the token's audience is not accepted"),
    (jwt.InvalidIssuerError, "untrusted_issuer", "the token's issuer is not accepted"),
    (jwt.InvalidIssuedAtError, "invalid_token", "the token's iat is invalid"),
    (jwt.InvalidSignatureError, "bad_signature", "signature verification failed"),
    (jwt.InvalidAlgorithmError, "algorithm_not_allowed", "the token's algorithm is not accepted"),
    (jwt.InvalidKeyError, "algorithm_not_allowed", "the signing key does not fit the token's algorithm"),
    (jwt.DecodeError, "malformed_token", "the token is malformed"),
)


class JwtPolicy(BasePolicy):
    name = "jwt"

    def __init__(self, configs: RouteConfigs[JwtConfig]) -> None:
        self.configs = configs
        self.sources: dict[tuple[str, str], KeySource] = {}  # one per distinct key origin, shared
        self._issuers: dict[int, dict[str, IssuerConfig]] = {}
        for cfg in configs.all():
            self._issuers[id(cfg)] = {i.issuer: i for i in cfg.issuers}
            for issuer in cfg.issuers:
                origin = _origin(issuer)
                if origin not in self.sources:
                    self.sources[origin] = _source(issuer)

    async def start(self) -> None:
        for source in self.sources.values():
            await source.start()

    async def stop(self) -> None:
        for source in self.sources.values():
            await source.stop()

    async def on_request(self, call: Call) -> None:
        cfg = self.configs.for_call(call)
        if not cfg.enabled:
            return
        for key in (cfg.consumer_metadata, *cfg.forward_claims.values()):
            if key:
                protect(call, key)
        if cfg.hide_credentials:
            call.hidden_headers.add("authorization")
        token = bearer_token(call.headers.get("Authorization"))
        if token is None:
            if cfg.anonymous:
                return
            raise reject(call, "missing_credentials", "a bearer token is required")
        try:
            claims, consumer = await self.verify(cfg, token)
        except _Invalid as bad:
            raise reject(
                call, bad.reason, f"invalid token: {bad.description}", headers={"WWW-Authenticate": bad.challenge}
            ) from None
        except KeysUnavailable:
            raise reject(
                call, "keys_unavailable", "the token issuer's signing keys are unavailable",
                grpc.StatusCode.UNAVAILABLE, headers={"Retry-After": "5"},
            ) from None
        tier = claims.get(cfg.tier_claim) if cfg.tier_claim else None
        grant(
            call, consumer, scopes_of(claims), cfg.consumer_metadata, claims=claims,
            tier=tier if isinstance(tier, str) else None,
        )
        for claim, key in cfg.forward_claims.items():
            value = claims.get(claim)
            if value is not None:
                set_metadata(call, key, metadata_value(value))

    async def verify(self, cfg: JwtConfig, token: str) -> tuple[dict[str, Any], str]:
        """The token's claims and consumer; raises `_Invalid` or `KeysUnavailable`."""
        if len(token) > cfg.max_token_bytes:
            raise _Invalid("malformed_token", "the token is too large")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _Invalid("malformed_token", "the token is malformed") from None
        alg, kid, iss = header.get("alg"), header.get("kid"), unverified.get("iss")
        issuer = self._issuers[id(cfg)].get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise _Invalid("untrusted_issuer", "the token's issuer is not accepted")
        if alg not in issuer.algorithms:  # `none` and HS-with-a-public-key end here
            raise _Invalid("algorithm_not_allowed", "the token's algorithm is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise _Invalid("malformed_token", "the token is malformed")
        key = await self.sources[_origin(issuer)].key(kid)
        if key is None:
            raise _Invalid("unknown_kid", "the token's signing key is not known")
        if not key.fits(alg):
            raise _Invalid("algorithm_not_allowed", "the signing key does not fit the token's algorithm")
        required = list(dict.fromkeys(("exp", "iss", "aud", *issuer.required_claims)))
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=[alg], audience=list(issuer.audiences), issuer=issuer.issuer,
                leeway=issuer.leeway_s, options={"require": required},
            )
        except jwt.MissingRequiredClaimError as exc:
            # The claim's name comes from our own list above, never from the token.
            raise _Invalid("missing_claim", f"the token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            for kind, reason, description in _FAILURES:
                if isinstance(exc, kind):
                    raise _Invalid(reason, description) from None
            raise _Invalid("invalid_token", "the token is invalid") from None
        consumer = claims.get(issuer.consumer_claim)
        if not isinstance(consumer, str | int) or isinstance(consumer, bool) or consumer == "":
            raise _Invalid("missing_claim", f"the token has no usable {issuer.consumer_claim!r} claim")
        return claims, metadata_value(consumer)


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    """Scopes from `scope` (RFC 8693: space-separated) and `scp` (a list, or a string like `scope`)."""
    out: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            out.update(value.split())
        elif isinstance(value, list):
            out.update(s for s in value if isinstance(s, str) and s)
    return frozenset(out)


def metadata_value(value: Any) -> str:
    """A claim as an ASCII metadata value: scalars as text, lists comma-joined, objects as JSON.

    gRPC metadata values must be printable ASCII, so anything else is percent-encoded (RFC 3986).
    """
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = str(value)
    elif isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        text = ",".join(str(v) for v in value)
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if text.isascii() and text.isprintable():
        return text
    return quote(text, safe=_SAFE)


def _origin(issuer: IssuerConfig) -> tuple[str, str]:
    if issuer.jwks_url is not None:
        return ("url", issuer.jwks_url)
    if issuer.jwks_file is not None:
        return ("file", str(issuer.jwks_file))
    assert issuer.secret_env is not None
    return ("secret", issuer.secret_env)


def _source(issuer: IssuerConfig) -> KeySource:
    if issuer.jwks_url is not None:
        return JwksUrlSource(
            issuer.jwks_url, issuer.cache_ttl_s, issuer.refetch_interval_s, issuer.timeout_ms / 1000
        )
    if issuer.jwks_file is not None:
        return jwks_file_source(issuer.jwks_file, issuer.cache_ttl_s, issuer.refetch_interval_s)
    assert issuer.secret_env is not None
    secret = os.environ.get(issuer.secret_env)
    if not secret:  # validated with the config, gone since
        raise ValueError(f"jwt issuer {issuer.issuer}: environment variable {issuer.secret_env} is not set")
    return SecretSource(secret.encode())


def build(configs: RouteConfigs[JwtConfig]) -> JwtPolicy:
    return JwtPolicy(configs)
