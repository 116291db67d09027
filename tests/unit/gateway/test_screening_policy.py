"""The screening policy's phases on a real `Call` and model, in one process (no sockets): a request sent
again is scored from its kept feature row, with the same note and verdict as the first time."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from multidict import CIMultiDict

import protos
from gateway.call import Call
from gateway.pipeline import Reply
from gateway.policies.base import RouteConfigs
from gateway.policies.screening import ScreeningConfig, build
from screening import features
from screening.values import request_values

protos.add_generated_path()
from echo.v1 import echo_pb2
from google.protobuf import json_format

BODY = {"message": "Could you send the Q3 report to Siobhan by Friday?", "repeat": 1,
        "labels": {"user": "alice.martin", "lang": "en-GB"}}
ATTACK = {"message": "1' UNION SELECT username, password FROM users--", "repeat": 1}


def _screen(policy: object, body: dict[str, object]) -> tuple[str, dict[str, object]]:
    call = Call("r", "POST", "/v1/echo", "127.0.0.1", CIMultiDict({"User-Agent": "curl/8.5.0"}), CIMultiDict(),
                route="echo.v1.EchoService.Echo")
    message = json_format.Parse(json.dumps(body), echo_pb2.EchoRequest())
    outcome = "allowed"
    policy.on_request(call)  # type: ignore[attr-defined]
    try:
        policy.on_message(call, message)  # type: ignore[attr-defined]
    except Reply:
        outcome = "blocked"
    policy.on_complete(call)  # type: ignore[attr-defined]
    return outcome, call.attributes["screening"]


@pytest.fixture(scope="module")
def policy() -> object:
    screening = build(RouteConfigs(ScreeningConfig(mode="block", top_features=5)))
    asyncio.run(screening.start())
    return screening


def test_a_repeated_request_is_screened_alike_from_its_kept_row(policy: object) -> None:
    for body in (BODY, ATTACK):
        first = _screen(policy, body)
        again = _screen(policy, body)
        assert first == again
    assert _screen(policy, ATTACK)[0] == "blocked" and _screen(policy, BODY)[0] == "allowed"
    kept = policy._vectors  # type: ignore[attr-defined]
    assert kept and all(not row.flags.writeable for row in kept.values())
    values, dropped = request_values("/v1/echo", [], {"User-Agent": "curl/8.5.0"},
                                            json_format.Parse(json.dumps(BODY), echo_pb2.EchoRequest()))
    assert np.array_equal(kept[(*values, dropped)][0], features.combine(features.field_vectors(values), dropped))


def test_long_values_are_scored_but_not_kept(policy: object) -> None:
    kept = policy._vectors  # type: ignore[attr-defined]
    before = len(kept)
    body = {"message": "word " * 100, "repeat": 1}
    assert _screen(policy, body) == _screen(policy, body)
    assert len(kept) == before
