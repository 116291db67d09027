"""`BackendConfig`: one entry of the gateway config's `backends:` block, a gRPC backend by name.

Declared here and embedded in `GatewayConfig.backends`, validated with the rest of the file at
start-up: the backend's `host:port` addresses, TLS towards it, health checks that feed `/readyz`,
outlier ejection per address, the retry budget its calls share, channels per address and which gRPC
client serves it. Relative file paths of its TLS block are resolved against the config file's
directory by `gateway.config.load_config`. Nothing here is read per request: the lifecycle builds one
upstream per backend from it (`gateway/upstream.py`, `upstreams/h2.py`, `balancer.py`), and a
request reaches the backend through that upstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.resilience import RetryBudgetConfig


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackendTLS(_Model):
    ca_file: Path | None = Field(None, description="CA bundle to verify the backend; None uses the system roots.")
    cert_file: Path | None = Field(None, description="Client certificate for mTLS towards the backend.")
    key_file: Path | None = Field(None, description="Client key for mTLS towards the backend.")
    server_name: str | None = Field(None, description="Name to verify instead of the address host.")


class HealthCheck(_Model):
    enabled: bool = Field(True, description="Poll grpc.health.v1 to feed /readyz.")
    interval_s: float = Field(5.0, gt=0, description="Seconds between checks.")
    timeout_s: float = Field(1.0, gt=0, description="Deadline of one check.")
    service: str = Field("", description="Service name to ask about; empty asks about the server.")


class OutlierConfig(_Model):
    enabled: bool = Field(True, description="Eject addresses that keep failing.")
    consecutive_failures: int = Field(5, ge=1, description="UNAVAILABLE failures in a row before ejection.")
    base_ejection_s: float = Field(10.0, gt=0, description="Ejection time; multiplied by the ejection count.")
    max_ejection_multiplier: int = Field(10, ge=1, description="Cap on that multiplier.")
    max_ejection_percent: float = Field(
        100.0, gt=0, le=100, description="Most addresses ejected at once (at least one can always be)."
    )


class BackendConfig(_Model):
    addresses: tuple[str, ...] = Field(min_length=1, description="host:port list, used round robin.")
    tls: BackendTLS | None = Field(None, description="TLS towards the backend; None is plaintext.")
    health: HealthCheck = Field(default_factory=HealthCheck, description="Health checking.")
    outlier: OutlierConfig = Field(default_factory=OutlierConfig, description="Outlier ejection per address.")
    retry_budget: RetryBudgetConfig = Field(
        default_factory=RetryBudgetConfig, description="Retry throttling shared by all calls to this backend."
    )
    channels_per_address: int = Field(1, ge=1, le=16, description="HTTP/2 connections per address.")
    client: Literal["h2", "grpcio"] = Field(
        "h2",
        description="gRPC client: 'h2' is the gateway's lean asyncio HTTP/2 client (gateway/upstreams/), "
        "'grpcio' is grpc.aio channels.",
    )

    @field_validator("addresses")
    @classmethod
    def _host_port(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{address!r} is not host:port")
        return value
