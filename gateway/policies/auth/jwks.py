"""Where JWT verification keys come from: a secret, a JWKS file or a JWKS URL, each a `KeySource`.

A JWKS document is parsed once into an immutable `KeySet` of `VerificationKey`s, indexed by `kid`.
Keys that cannot verify anything are dropped when the set is parsed, with a warning: symmetric
(`oct`) keys (a published JWKS never holds a shared secret), keys that hold private material, and
keys meant for encryption. `VerificationKey.fits(alg)` ties each key to the algorithms of its type
(RSA: RS*/PS*, EC: the ES* of its curve, OKP: EdDSA, a secret: HS*), so a token can never pick a
verification that its key was not made for (the HS/RS confusion).

A JWKS source is refreshed every `cache_ttl_s` by a loop that `start()` runs and `stop()` cancels,
and on demand when a token names a `kid` it does not know (a rotation), at most once per
`refetch_interval_s` whatever the traffic: concurrent requests share one fetch. A failed refresh
keeps the keys it had (they go stale rather than vanish); only a source that never loaded any keys
raises `KeysUnavailable`, which the `jwt` policy answers with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from jwt import PyJWK, PyJWTError

log = logging.getLogger("portcullis.auth.jwks")

# Algorithm -> (key type, curve or None). The only algorithms the policy will ever accept.
FAMILY: Mapping[str, tuple[str, str | None]] = {
    "HS256": ("oct", None), "HS384": ("oct", None), "HS512": ("oct", None),
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
MAX_JWKS_BYTES = 1 << 20


class JwksError(ValueError):
    """A JWKS document that cannot be read or holds no usable key; the message names its origin."""


class KeysUnavailable(Exception):
    """A JWKS source has no keys at all yet: its document could not be fetched or parsed."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None  # the `alg` the JWK declares, if any: then only that one is allowed
    key: Any  # a cryptography public key, or bytes for a secret

    def fits(self, alg: str) -> bool:
        family = FAMILY.get(alg)
        if family is None or family[0] != self.kty:
            return False
        if family[1] is not None and family[1] != self.crv:
            return False
        if alg == "EdDSA" and self.crv not in ("Ed25519", "Ed448"):
            return False
        return self.alg is None or self.alg == alg


@dataclass(frozen=True, slots=True)
class KeySet:
    by_kid: Mapping[str, VerificationKey]
    keys: tuple[VerificationKey, ...]

    def find(self, kid: str | None) -> VerificationKey | None:
        if kid is not None:
            return self.by_kid.get(kid)
        # A token without a kid is only matched when there is no choice to make.
        return self.keys[0] if len(self.keys) == 1 else None


def parse_jwks(doc: Any, origin: str) -> KeySet:
    """The usable keys of a JWKS document; `JwksError` if it is not one or holds no usable key."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError(f"{origin}: not a JWKS document (expected an object with a 'keys' list)")
    keys: list[VerificationKey] = []
    for n, jwk in enumerate(doc["keys"]):
        where = f"{origin}: key {n}"
        if not isinstance(jwk, dict):
            log.warning("%s: not an object, skipped", where)
            continue
        kty, kid = jwk.get("kty"), jwk.get("kid")
        if kty == "oct" or "d" in jwk:
            log.warning("%s: holds secret or private key material, skipped (a JWKS must be public)", where)
            continue
        if jwk.get("use", "sig") != "sig" or (kid is not None and not isinstance(kid, str)):
            log.warning("%s: not a signing key with a string kid, skipped", where)
            continue
        try:
            parsed = PyJWK(jwk)
        except (PyJWTError, ValueError, TypeError) as exc:
            log.warning("%s: unusable (%s), skipped", where, exc)
            continue
        keys.append(VerificationKey(kid, str(kty), jwk.get("crv"), jwk.get("alg"), parsed.key))
    if not keys:
        raise JwksError(f"{origin}: no usable signing key")
    by_kid = {k.kid: k for k in keys if k.kid is not None}
    return KeySet(by_kid, tuple(keys))


def read_jwks_file(path: Path) -> KeySet:
    try:
        text = path.read_text()
    except OSError as exc:
        raise JwksError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise JwksError(f"{path}: not valid JSON: {exc}") from None
    return parse_jwks(doc, str(path))


class KeySource(Protocol):
    async def key(self, kid: str | None) -> VerificationKey | None:
        """The key for `kid`, None if there is none; raises `KeysUnavailable`."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class SecretSource:
    """One shared secret (HS*), from the environment; the token's kid is not consulted."""

    def __init__(self, secret: bytes) -> None:
        self._key = VerificationKey(None, "oct", None, None, secret)

    async def key(self, kid: str | None) -> VerificationKey | None:
        return self._key

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class RefreshingSource:
    """A key set that is refetched every TTL and, rate-limited, when a kid is unknown."""

    def __init__(
        self, origin: str, cache_ttl_s: float, refetch_interval_s: float,
        fetch: Callable[[], Awaitable[KeySet]], clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.origin = origin
        self.cache_ttl_s = cache_ttl_s
        self.refetch_interval_s = refetch_interval_s
        self._fetch = fetch  # raises OSError, ValueError or aiohttp's errors when it fails
        self._clock = clock
        self._keys: KeySet | None = None
        self._last_attempt = -math.inf
        self._lock = asyncio.Lock()
        self._loop: asyncio.Task[None] | None = None
        self.fetches = 0  # attempts, for tests and the admin view

    def preload(self, keys: KeySet) -> None:
        """Keys read at start-up (a JWKS file, already validated): no fetch needed to serve."""
        self._keys = keys
        self._last_attempt = self._clock()

    async def key(self, kid: str | None) -> VerificationKey | None:
        keys = self._keys
        if keys is not None:
            found = keys.find(kid)
            if found is not None:
                return found
        await self.refresh(on_demand=True)
        keys = self._keys
        if keys is None:
            raise KeysUnavailable(self.origin)
        return keys.find(kid)

    async def refresh(self, on_demand: bool) -> None:
        async with self._lock:  # one fetch at a time; those waiting then see its keys
            now = self._clock()
            if on_demand and now - self._last_attempt < self.refetch_interval_s:
                return
            self._last_attempt = now
            self.fetches += 1
            try:
                keys = await self._fetch()
            except (OSError, ValueError, aiohttp.ClientError, TimeoutError) as exc:
                state = "keeping the previous keys" if self._keys is not None else "no keys yet"
                log.warning("JWKS %s not refreshed (%s): %s", self.origin, state, exc or type(exc).__name__)
                return
            self._keys = keys

    async def _refresh_forever(self) -> None:
        while True:
            # Without any keys, retry at the refetch pace rather than waiting a whole TTL.
            await asyncio.sleep(self.cache_ttl_s if self._keys is not None else self.refetch_interval_s)
            await self.refresh(on_demand=False)

    async def start(self) -> None:
        if self._keys is None:
            await self.refresh(on_demand=False)
        self._loop = asyncio.create_task(self._refresh_forever(), name=f"jwks refresh {self.origin}")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None


def jwks_file_source(path: Path, cache_ttl_s: float, refetch_interval_s: float) -> RefreshingSource:
    async def fetch() -> KeySet:
        return await asyncio.to_thread(read_jwks_file, path)

    source = RefreshingSource(str(path), cache_ttl_s, refetch_interval_s, fetch)
    source.preload(read_jwks_file(path))
    return source


class JwksUrlSource(RefreshingSource):
    """A JWKS endpoint, fetched with one long-lived client session opened by `start()`."""

    def __init__(self, url: str, cache_ttl_s: float, refetch_interval_s: float, timeout_s: float) -> None:
        super().__init__(url, cache_ttl_s, refetch_interval_s, self._get)
        self.url = url
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def _get(self) -> KeySet:
        if self._session is None:
            raise JwksError("not started")
        async with self._session.get(self.url, headers={"Accept": "application/json"}) as response:
            if response.status != 200:
                raise JwksError(f"HTTP {response.status}")
            body = await response.content.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise JwksError(f"document larger than {MAX_JWKS_BYTES} bytes")
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise JwksError(f"not valid JSON: {exc}") from None
        return parse_jwks(doc, self.url)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        if self._session is not None:
            await self._session.close()
            self._session = None
