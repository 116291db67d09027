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


def _screen(policy: object, body: dict[str, object], route: str = "echo.v1.EchoService.Echo"
            ) -> tuple[str, dict[str, object]]:
    call = Call("r", "POST", "/v1/echo", "127.0.0.1", CIMultiDict({"User-Agent": "curl/8.5.0"}), CIMultiDict(),
                route=route)
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
    assert kept and all(not entry.X.flags.writeable for entry in kept.values())
    values, dropped = request_values("/v1/echo", [], {"User-Agent": "curl/8.5.0"},
                                            json_format.Parse(json.dumps(BODY), echo_pb2.EchoRequest()))
    assert np.array_equal(kept[(*values, dropped)].X[0], features.combine(features.field_vectors(values), dropped))


def test_long_values_are_scored_but_not_kept(policy: object) -> None:
    kept = policy._vectors  # type: ignore[attr-defined]
    before = len(kept)
    body = {"message": "word " * 100, "repeat": 1}
    assert _screen(policy, body) == _screen(policy, body)
    assert len(kept) == before


def test_a_kept_row_names_its_top_features_for_the_model_and_count_asked() -> None:
    """The names logged for a kept row are worked out once per (model, count) and kept with the row: the
    same as from the row itself, for each route's count, and again after a swap (for the new model)."""
    screening = build(RouteConfigs(ScreeningConfig(mode="block", top_features=5),
                                   {"echo.v1.EchoService.Other": ScreeningConfig(mode="block", top_features=2)}))
    asyncio.run(screening.start())
    try:
        values, dropped = request_values("/v1/echo", [], {"User-Agent": "curl/8.5.0"},
                                         json_format.Parse(json.dumps(BODY), echo_pb2.EchoRequest()))
        row = features.combine(features.field_vectors(values), dropped)

        def expected(k: int) -> list[str]:
            return [name for name, _ in screening.scorer.active.top_features(row, k)]  # type: ignore[union-attr]

        notes = [_screen(screening, BODY)[1] for _ in range(3)]  # kept from the second sighting
        entry = screening._vectors[(*values, dropped)]
        assert entry.names == expected(5) and len(expected(5)) == 5
        assert all(note["top_features"] == expected(5) for note in notes)
        notes[2]["top_features"].append("changed")  # a note's list is its own
        for route, k in (("echo.v1.EchoService.Other", 2), ("echo.v1.EchoService.Echo", 5),
                         ("echo.v1.EchoService.Other", 2)):
            assert _screen(screening, BODY, route)[1]["top_features"] == expected(k)
        before = screening.scorer.active  # type: ignore[union-attr]
        swapped = asyncio.run(screening.activate("2026.11.29-2"))
        assert swapped is not before
        _, note = _screen(screening, BODY)
        assert note["model"] == swapped.key and note["top_features"] == expected(5)
        assert entry.model is swapped
    finally:
        asyncio.run(screening.stop())


def test_the_observer_tallies_one_row_runs_as_tally_observe_does() -> None:
    from gateway.metrics_registry import SCREENING_BATCH_SIZE, Tally
    from gateway.policies.screening.observer import _Observer

    observer, reference = _Observer(deferred=True), Tally(SCREENING_BATCH_SIZE)
    for size in (1, 1, 3, 1, 256, 1, 2):
        observer.batch(size, 0.0001)
        reference.observe(size)
    assert observer.sizes.counts == reference.counts and observer.sizes.total == reference.total
    assert sum(observer.seconds.counts) == 7
