"""The fleet's message format and config: what is accepted, and what is refused before any model is touched."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.config import FleetConfig
from gateway.fleet import Change

SHA = "0123456789abcdef" * 4


def test_a_change_round_trips() -> None:
    change = Change("activate", "request-screening", "v2", SHA, "gw-a")
    assert Change.parse(change.to_bytes()) == change
    off = Change("shadow", "request-screening", None, None, "gw-a")
    assert Change.parse(off.to_bytes()) == off


@pytest.mark.parametrize("raw", [
    b"", b"not json", b"[1, 2]", b'"activate"', b"{}",
    b'{"action": "delete", "name": "m", "version": "v1", "sha256": "' + SHA.encode() + b'", "origin": "x"}',
    b'{"action": "activate", "name": "m", "version": null, "sha256": null, "origin": "x"}',
    b'{"action": "activate", "name": "m", "version": "v1", "sha256": "abc", "origin": "x"}',
    b'{"action": "rollback", "name": "", "version": "v1", "sha256": "' + SHA.encode() + b'", "origin": "x"}',
    b'{"action": "activate", "name": "m", "version": "v1", "sha256": "' + SHA.encode() + b'", "origin": 7}',
    b"\xff\xfe",
])
def test_malformed_messages_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        Change.parse(raw)


def test_fleet_config_is_validated() -> None:
    assert FleetConfig().channel == "portcullis:fleet:models"
    with pytest.raises(ValidationError, match="redis://"):
        FleetConfig(redis_url="http://127.0.0.1:6379")
    with pytest.raises(ValidationError, match="Extra inputs"):
        FleetConfig.model_validate({"redis": "redis://x"})
    with pytest.raises(ValidationError):
        FleetConfig(timeout_s=0)
