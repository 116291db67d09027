"""API keys (`api_key`): the key from a header or query parameter, checked against the key file.

A key found in the file's active keys makes its consumer the caller: `call.consumer`, the key's
scopes in `call.scopes`, its rate-limit tier in `call.attributes["tier"]`, and the consumer id sent
upstream as metadata `x-consumer-id` (a client header that would forge it is never forwarded).
With `hide_credentials` the key itself never reaches the backend. A missing key, or one that is
unknown or revoked, is a 401; with `anonymous: true` a missing key passes without a principal (so
that a `jwt` policy or `authorize` decides), an invalid one still fails. Routes without auth set
`enabled: false`.

The key file is read at start-up (a missing or invalid file fails there) and watched by a
background loop started in `start()`, so keys added or revoked with `portcullis keys` take effect
within `reload_interval_s` without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

from multidict import istr
from pydantic import Field, field_validator, model_validator

from gateway.call import Call
from gateway.policies.auth import keystore
from gateway.policies.auth.keystore import HITS_CACHED, KeyFileError, KeyIndex, KeyStore
from gateway.policies.auth.principal import protected, reject, set_metadata
from gateway.policies.base import BasePolicy, PolicyConfig, RouteConfigs

HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"  # an RFC 9110 token


class ApiKeyConfig(PolicyConfig):
    enabled: bool = Field(True, description="Require an API key on these routes.")
    key_file: Path = Field(description="Key file (YAML, or JSON if it ends in .json) kept by `portcullis keys`.")
    header: str | None = Field(
        "X-API-Key", pattern=HEADER_NAME, description="Request header carrying the key; null to not read one."
    )
    query_param: str | None = Field(
        None, pattern=HEADER_NAME, max_length=64,
        description="Query parameter carrying the key; off by default (URLs end up in logs and histories).",
    )
    hide_credentials: bool = Field(True, description="Strip the key header and query parameter before forwarding.")
    anonymous: bool = Field(
        False, description="Let requests without a key through unauthenticated (an invalid key still fails)."
    )
    consumer_metadata: str | None = Field(
        "x-consumer-id", pattern=r"^[a-z0-9_.-]+$", description="Metadata key carrying the consumer id upstream."
    )
    reload_interval_s: float = Field(1.0, ge=0.05, le=3600, description="How often the key file is checked.")

    @field_validator("key_file")
    @classmethod
    def _readable(cls, value: Path) -> Path:
        try:
            keystore.read(value)
        except KeyFileError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("consumer_metadata")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("grpc-") or value.endswith("-bin")):
            raise ValueError("must not start with 'grpc-' (reserved) or end with '-bin' (binary)")
        return value

    @model_validator(mode="after")
    def _somewhere(self) -> ApiKeyConfig:
        if self.header is None and self.query_param is None:
            raise ValueError("set header, query_param or both: the key has to come from somewhere")
        return self


class ApiKeyPolicy(BasePolicy):
    name = "api_key"

    def __init__(self, configs: RouteConfigs[ApiKeyConfig]) -> None:
        self.configs = configs
        # One store per key file, shared by every route that names it.
        self.stores: dict[Path, KeyStore] = {}
        for cfg in configs.all():
            if cfg.key_file not in self.stores:
                self.stores[cfg.key_file] = KeyStore(cfg.key_file)
        self._watchers: list[asyncio.Task[None]] = []
        # Compiled once per route config (they live as long as the policy, so id() names them).
        self._plans = {id(cfg): _Plan.of(cfg, self.stores[cfg.key_file]) for cfg in configs.all()}
        self._default = self._plans[id(configs.default)]
        self._one_config = not configs.by_route  # no per-route override: no lookup per request
        # One config, on, the key in a header only: the plan, taken with no lookup or test.
        default = self._default
        usual = self._one_config and default.enabled and default.header is not None and default.query_param is None
        self._header_only = default if usual else None

    async def start(self) -> None:
        interval = min(c.reload_interval_s for c in self.configs.all())
        for store in self.stores.values():
            store.refresh()  # the file may have changed since the config was validated
            self._watchers.append(asyncio.create_task(store.watch(interval), name=f"api_key watch {store.path}"))

    async def stop(self) -> None:
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watchers.clear()

    def on_request(self, call: Call) -> None:
        plan = self._header_only
        if plan is not None:  # the usual case, with nothing to look up or test first
            call.hidden_headers |= plan.hidden  # an operator, not a method call
            presented = call.headers.get(plan.header)  # type: ignore[arg-type]  # not None: header_only
        else:
            plan = self._default if self._one_config else self._plans[id(self.configs.for_call(call))]
            if not plan.enabled:
                return
            call.hidden_headers |= plan.hidden
            presented = None
            if plan.header is not None:
                presented = call.headers.get(plan.header)
            if plan.query_param is not None:
                if presented is None:
                    presented = call.query.get(plan.query_param)
                if plan.hide_query:
                    call.hidden_query.add(plan.query_param)
        if not presented:
            if plan.anonymous:
                return
            raise reject(call, "missing_credentials", "an API key is required", headers=_challenge(plan.cfg))
        granted = plan.granted.get(presented)
        if granted is None or granted[0] is not plan.store.index:  # [0]: found_in
            granted = _admit(call, plan, presented)
        # grant(), with what it derives from the key record made once per key.
        _, call.consumer, call.scopes, notes, metadata = granted
        if call.attributes:
            call.attributes.update(notes)
        else:  # no note yet: a copy of the key's two (a clone of the table) is cheaper than two stores
            call.attributes = notes.copy()
        if metadata is not None:
            if call.upstream_metadata:
                set_metadata(call, *metadata)
            else:
                call.upstream_metadata.append(metadata)


# What a found key grants, under one plan, while its index serves: (found_in: the index the key
# was found in, as a reload makes the entry stale; consumer; scopes; notes: {"api_key_id": ...,
# "tier": ...} for call.attributes, never mutated; metadata: (consumer_metadata, consumer) or None).
# A plain tuple, not a NamedTuple: on_request's unpacking and [0] then take the interpreter's
# exact-tuple paths instead of an iterator over a subclass.
_Granted = tuple[KeyIndex, str, frozenset[str], dict[str, str], tuple[str, str] | None]


def _admit(call: Call, plan: _Plan, presented: str) -> _Granted:
    """Look a key up in the current index (which hashes it unless it has seen it): what it grants,
    remembered for the next request that presents it, or the 401 raised."""
    index = plan.store.index
    record, outcome = index.lookup(presented.strip())
    cache = plan.granted
    if record is None:
        assert outcome != "ok"
        cache.pop(presented, None)
        raise reject(call, outcome, "invalid API key", headers=_challenge(plan.cfg))
    if len(cache) >= HITS_CACHED or (cache and next(iter(cache.values()))[0] is not index):
        cache.clear()  # full, or filled from an index a reload replaced: start over
    metadata = (plan.consumer_metadata, record.consumer) if plan.consumer_metadata else None
    notes = {"api_key_id": record.id, "tier": record.tier}
    granted = cache[presented] = (index, record.consumer, frozenset(record.scopes), notes, metadata)
    return granted


@dataclass(frozen=True, slots=True)
class _Plan:
    """One route's config as plain slots (a pydantic model's attributes are slower to read) and its store."""

    cfg: ApiKeyConfig
    enabled: bool
    header: str | None
    query_param: str | None
    hide_query: bool
    anonymous: bool
    consumer_metadata: str | None
    hidden: frozenset[str]
    store: KeyStore
    # Keys presented and found, by the presented text: what each grants (see `_admit`). In memory
    # only, as they already are in each request's headers; bounded by HITS_CACHED, cleared on reload.
    granted: dict[str, _Granted]

    @staticmethod
    def of(cfg: ApiKeyConfig, store: KeyStore) -> _Plan:
        # istr: a request's CIMultiDict finds it without folding its case per lookup.
        header = istr(cfg.header) if cfg.header is not None else None
        return _Plan(
            cfg, cfg.enabled, header, cfg.query_param, cfg.hide_credentials, cfg.anonymous,
            cfg.consumer_metadata, _hidden_headers(cfg), store, {},
        )


def _hidden_headers(cfg: ApiKeyConfig) -> frozenset[str]:
    """Lower-case client headers never forwarded: what could forge the consumer metadata, and the key."""
    names: set[str] = set()
    if cfg.consumer_metadata:
        names |= protected(cfg.consumer_metadata)
    if cfg.header is not None and cfg.hide_credentials:
        names.add(cfg.header.lower())
    return frozenset(names)


def _challenge(cfg: ApiKeyConfig) -> dict[str, str]:
    where = f'header="{cfg.header}"' if cfg.header else f'query="{cfg.query_param}"'
    return {"WWW-Authenticate": f'ApiKey realm="portcullis", {where}'}


def build(configs: RouteConfigs[ApiKeyConfig]) -> ApiKeyPolicy:
    return ApiKeyPolicy(configs)
