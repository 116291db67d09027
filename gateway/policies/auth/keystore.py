"""API keys at rest: the key file, its records, and the index the `api_key` policy reads.

A key is `pk_` + `secrets.token_urlsafe(32)` (256 random bits). It is shown once, by
`portcullis keys add`, and never stored or logged: the file (YAML, or JSON when the name ends in
`.json`) holds its SHA-256 as `sha256:<hex>`, a short display prefix, the consumer it is bound to,
that consumer's scopes and rate-limit tier, and when it was created or revoked. A plain unsalted
hash is enough here because the secret is high-entropy: no dictionary covers 2^256 inputs, so
salting or stretching would buy nothing and cost every request.

`KeyIndex` is an immutable lookup built from one load of the file. `KeyStore` owns the current
index and swaps in a new one when the file changes (mtime, size or inode); a file that does not
parse is logged and the last good index keeps serving. Writers (the CLI) take an advisory lock and
replace the file atomically (temp file + rename), so a reader never sees half a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger("portcullis.auth.keys")

KEY_PREFIX = "pk_"
SHOWN_CHARS = 4  # random characters kept after the prefix to tell keys apart in `keys list`
MAX_KEY_CHARS = 256  # anything longer is not one of ours; refused before hashing
# Printable ASCII without spaces: consumer ids and scopes travel as gRPC metadata and log fields.
TOKEN_PATTERN = r"^[\x21-\x7e]+$"


def is_scope_token(scope: str) -> bool:
    """RFC 6749 3.3 scope-token: printable ASCII without space, double quote or backslash."""
    return bool(scope) and all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in scope)


class KeyFileError(ValueError):
    """A key file that cannot be read or does not validate; the message names the file."""


class KeyRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^k_[0-9a-f]{8,32}$", description="Public key id, used to revoke.")
    consumer: str = Field(min_length=1, max_length=128, pattern=TOKEN_PATTERN, description="Who holds the key.")
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="SHA-256 of the key; the key is never stored.")
    prefix: str = Field("", max_length=16, description="The key's first characters, to recognise it.")
    scopes: tuple[str, ...] = Field((), description="Scopes the consumer holds with this key.")
    tier: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Rate-limit tier.")
    created: datetime = Field(description="When the key was made (UTC).")
    revoked: datetime | None = Field(None, description="When the key was revoked; None while active.")

    @model_validator(mode="after")
    def _scope_tokens(self) -> KeyRecord:
        for scope in self.scopes:
            if not is_scope_token(scope):
                raise ValueError(f"scope {scope!r} is not an OAuth scope token")
        return self


class KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = Field(1, description="Format version.")
    keys: tuple[KeyRecord, ...] = Field((), description="Every key ever issued, revoked ones included.")

    @model_validator(mode="after")
    def _unique(self) -> KeyFile:
        for attr in ("id", "hash"):
            values = [getattr(k, attr) for k in self.keys]
            if len(values) != len(set(values)):
                raise ValueError(f"two keys share one {attr}")
        return self


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_record(key: str, consumer: str, scopes: tuple[str, ...] = (), tier: str = "default") -> KeyRecord:
    return KeyRecord(
        id="k_" + secrets.token_hex(6),
        consumer=consumer,
        hash=hash_key(key),
        prefix=key[: len(KEY_PREFIX) + SHOWN_CHARS],
        scopes=scopes,
        tier=tier,
        created=datetime.now(UTC).replace(microsecond=0),
    )


# --- reading and writing the file --------------------------------------------------------------


def parse(text: str, path: Path) -> KeyFile:
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise KeyFileError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if raw is None:
        raw = {}
    try:
        return KeyFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
        )
        raise KeyFileError(f"{path}: invalid key file: {problems}") from None


def render(keys: KeyFile, path: Path) -> str:
    data = keys.model_dump(mode="json")
    if path.suffix == ".json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=False)


def read(path: Path) -> KeyFile:
    try:
        return parse(path.read_text(), path)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None


def write(path: Path, keys: KeyFile) -> None:
    """Replace the file atomically, readable by its owner only."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(render(keys, path))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An advisory lock beside the key file, so two CLI writers never lose each other's change."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def add(path: Path, consumer: str, scopes: tuple[str, ...] = (), tier: str = "default") -> tuple[str, KeyRecord]:
    """Issue a key: the plain key (to show once) and its record, now in the file."""
    key = new_key()
    try:
        record = new_record(key, consumer, scopes, tier)
    except ValidationError as exc:
        raise KeyFileError("; ".join(f"{e['loc'][0] if e['loc'] else 'key'}: {e['msg']}" for e in exc.errors()))
    with locked(path):
        current = read(path) if path.exists() else KeyFile()
        write(path, KeyFile(keys=(*current.keys, record)))
    return key, record


def revoke(path: Path, key_id: str) -> KeyRecord:
    with locked(path):
        current = read(path)
        found = next((k for k in current.keys if k.id == key_id), None)
        if found is None:
            raise KeyFileError(f"{path}: no key with id {key_id!r}")
        if found.revoked is not None:
            return found
        revoked = found.model_copy(update={"revoked": datetime.now(UTC).replace(microsecond=0)})
        write(path, KeyFile(keys=tuple(revoked if k.id == key_id else k for k in current.keys)))
    return revoked


# --- the index the policy reads -----------------------------------------------------------------


HITS_CACHED = 4096  # presented keys remembered per index; past it the cache starts over


@dataclass(frozen=True, slots=True)
class KeyIndex:
    """Active keys by hash, and a cache of the keys presented and found, so a hit skips the SHA-256.

    The cache lives in the index: a reload (a key revoked) swaps in a new index with an empty cache,
    so a revoked key stops working at the same moment as without it. Only keys found active are
    cached, so a flood of wrong keys cannot push out the good ones; it is bounded by `HITS_CACHED`
    and cleared when full (a few thousand keys in use at once is far more than a gateway sees). The
    presented keys it holds are in memory only, as they already are in every request's headers; a
    dict lookup compares a key only with entries of the same (randomised) string hash, so its timing
    tells nothing about stored keys.
    """

    active: Mapping[str, KeyRecord]  # by hash
    revoked: frozenset[str]  # hashes, only to tell "revoked" from "unknown" in logs and metrics
    _hits: dict[str, KeyRecord] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, keys: KeyFile) -> KeyIndex:
        return cls(
            {k.hash: k for k in keys.keys if k.revoked is None},
            frozenset(k.hash for k in keys.keys if k.revoked is not None),
        )

    def lookup(self, presented: str) -> tuple[KeyRecord | None, Literal["ok", "unknown_key", "revoked_key"]]:
        hit = self._hits.get(presented)
        if hit is not None:
            return hit, "ok"
        if len(presented) > MAX_KEY_CHARS:
            return None, "unknown_key"
        digest = hash_key(presented)
        # A dict lookup by hash is not constant-time, and need not be: the timing can at most reveal
        # a prefix of a SHA-256, which does not help to find a 256-bit random key. The match is
        # still confirmed with a constant-time comparison of the two hashes.
        record = self.active.get(digest)
        if record is not None and hmac.compare_digest(record.hash, digest):
            if len(self._hits) >= HITS_CACHED:
                self._hits.clear()
            self._hits[presented] = record
            return record, "ok"
        return None, "revoked_key" if digest in self.revoked else "unknown_key"


def _signature(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class KeyStore:
    """The current `KeyIndex` of one key file, swapped by reference when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = _signature(path)
        # The index serving now: read per request, replaced (never changed) by `refresh`. A plain
        # attribute, not a property: a property costs a Python call per read.
        self.index = KeyIndex.of(read(path))
        self._rejected: tuple[int, int, int] | None = None  # a bad version, reported once
        self.reloads = 0

    def refresh(self) -> bool:
        """Reload if the file changed; True if a new index was swapped in. Never raises."""
        try:
            signature: tuple[int, int, int] | None = _signature(self.path)
        except OSError as exc:
            signature = None
            problem = f"cannot read: {exc.strerror}"
        else:
            if signature in (self._signature, self._rejected):
                return False
            try:
                index = KeyIndex.of(read(self.path))
            except KeyFileError as exc:
                problem = str(exc)
            else:
                self.index, self._signature, self._rejected = index, signature, None
                self.reloads += 1
                log.info("key file %s reloaded: %d active keys", self.path, len(index.active))
                return True
        if signature is None and self._signature is None:
            return False  # still missing: said so already
        log.error("key file %s not reloaded, the last good keys stay in use: %s", self.path, problem)
        if signature is None:
            self._signature = None
        else:
            self._rejected = signature
        return False

    async def watch(self, interval_s: float) -> None:
        """Check the file every `interval_s`, off the event loop; runs until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.to_thread(self.refresh)
