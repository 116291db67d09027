"""`InferenceConfig`: the `inference:` block of the gateway config, the model-serving settings.

Declared here, embedded in `GatewayConfig.inference` (absent: no inference routes, no gRPC
listener). Per-model serving settings use the library's one schema (`ModelSettings`), so a key means
the same in a manifest's `serving` block and here. Policy overrides ride along: `policies` applies
over the global policy settings to every inference call (route key `inference`), a model's
`policies` over those to that model's calls (route `inference.<model>`), and `server_policies` and
`repository_policies` to the server routes (`inference/server`: /v2, health) and the repository
extension (`inference/repository`: index, load, unload). A request naming a model the server does
not know gets the route `inference/unknown` (the common settings), so clients cannot mint routes. `policy_overrides` hands them to the
policy registry, which validates them at start-up like any route's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.tls import ListenerTLS
from screening.serving.settings import ModelSettings

SERVICE = "inference"  # Call.service of every inference call; the route key of `inference.policies`
SERVER_ROUTE = "inference/server"
REPOSITORY_ROUTE = "inference/repository"
UNKNOWN_ROUTE = "inference/unknown"  # a model name nobody knows: not a route label of its own


def model_route(name: str) -> str:
    return f"{SERVICE}.{name}"


class GrpcListener(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address of the gRPC inference listener.")
    port: int = Field(8001, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    tls: ListenerTLS | None = Field(None, description="TLS (cert_file, key_file, client CA); None is plaintext.")


class InferenceModelConfig(ModelSettings):
    """One model's serving settings (over the manifest's) and its policy overrides."""

    policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-model policy settings, by policy name (e.g. authorize scopes)."
    )


class InferenceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Serve the Open Inference Protocol under /v2.")
    models_dir: Path = Field(Path("models"), description="Model repository root: <name>/<version>/model.onnx.")
    load: tuple[str, ...] | None = Field(
        None, description="Models loaded at start-up; None: every model in the repository."
    )
    grpc_listen: GrpcListener | None = Field(
        None, description="gRPC listener of inference.GRPCInferenceService; None: REST only."
    )
    max_request_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="Largest inference request body (REST) or message (gRPC)."
    )
    retire_grace_s: float = Field(
        30.0, ge=0, le=3600, description="After a swap or unload, how long requests holding an old version may run."
    )
    defaults: ModelSettings = Field(
        default_factory=ModelSettings, description="Serving settings of every model, under its manifest's."
    )
    models: dict[str, InferenceModelConfig] = Field(
        default_factory=dict, description="Per-model settings by model name, over the manifest's."
    )
    policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Policy settings of every inference call, over the global ones."
    )
    server_policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Policy settings of /v2 and /v2/health/* (e.g. open health probes)."
    )
    repository_policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Policy settings of /v2/repository/* (load, unload: an admin scope)."
    )

    @field_validator("models")
    @classmethod
    def _names(cls, value: dict[str, InferenceModelConfig]) -> dict[str, InferenceModelConfig]:
        for name in value:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"{name!r} is not a model name (one path segment)")
        return value

    def model_overrides(self) -> dict[str, dict[str, Any]]:
        """Each configured model's serving keys (what it sets), for the repository."""
        return {
            name: cfg.model_dump(exclude_unset=True, exclude_none=True, exclude={"policies"})
            for name, cfg in self.models.items()
        }

    def policy_overrides(self, policy: str) -> list[tuple[str, Mapping[str, Any], str]]:
        """(route key, override, key path) of one policy, as `policies._overrides` lists a service's."""
        out: list[tuple[str, Mapping[str, Any], str]] = []
        common = self.policies.get(policy)
        if common is not None:
            out.append((SERVICE, common, f"inference.policies.{policy}"))
        routes = [(SERVER_ROUTE, self.server_policies, "inference.server_policies"),
                  (REPOSITORY_ROUTE, self.repository_policies, "inference.repository_policies")]
        routes += [(model_route(n), m.policies, f"inference.models.{n}.policies") for n, m in self.models.items()]
        for route, policies, where in routes:
            own = policies.get(policy)
            if own is not None:
                out.append((route, {**(common or {}), **own}, f"{where}.{policy}"))
        return out

    def policy_names(self) -> list[tuple[str, list[str], str]]:
        """(route key, policy names overridden, key path), to check they are all in the policies list."""
        out = [(SERVICE, list(self.policies), "inference.policies"),
               (SERVER_ROUTE, list(self.server_policies), "inference.server_policies"),
               (REPOSITORY_ROUTE, list(self.repository_policies), "inference.repository_policies")]
        out += [(model_route(n), list(m.policies), f"inference.models.{n}.policies") for n, m in self.models.items()]
        return out
