"""The screening policy's phases on a real `Call` and model, in one process (no sockets): a request sent
again is decided from the repeat memo, with the note, reply and tallies the uncached path gives."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from multidict import CIMultiDict

import protos
from gateway.call import Call
from gateway.metrics_registry import REGISTRY
from gateway.pipeline import Reply
from gateway.policies.base import RouteConfigs
from gateway.policies.screening import ScreeningConfig, build
from gateway.policies.screening.kept_rows import message_key
from screening import features
from screening.values import head_values, request_values

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


def test_a_repeated_request_is_decided_from_its_memo(policy: object) -> None:
    """Kept from its second sighting (its row read-only, the row of its values); from the third on,
    decided from the memo: the same note and verdict, no onnxruntime run, one memo hit each."""
    observer = policy._observer  # type: ignore[attr-defined]
    for body in (BODY, ATTACK):
        first, second = _screen(policy, body), _screen(policy, body)
        runs, hits = observer.sizes.total, policy._tallies.memo_hits  # type: ignore[attr-defined]
        assert [_screen(policy, body) for _ in range(3)] == [first] * 3
        assert observer.sizes.total == runs and policy._tallies.memo_hits == hits + 3  # type: ignore[attr-defined]
        assert first == second
    assert _screen(policy, ATTACK)[0] == "blocked" and _screen(policy, BODY)[0] == "allowed"
    message = json_format.Parse(json.dumps(BODY), echo_pb2.EchoRequest())
    values, dropped = request_values("/v1/echo", [], {"User-Agent": "curl/8.5.0"}, message)
    entry = policy._kept[message_key(head_values("/v1/echo", [], {"User-Agent": "curl/8.5.0"}), message)]  # type: ignore[attr-defined]
    assert not entry.X.flags.writeable and entry.values == values
    assert np.array_equal(entry.X[0], features.combine(features.field_vectors(values), dropped))


def test_long_requests_are_scored_but_not_kept(policy: object) -> None:
    kept = policy._kept  # type: ignore[attr-defined]
    before = len(kept)
    body = {"message": "word " * 500, "repeat": 1}
    assert _screen(policy, body) == _screen(policy, body) == _screen(policy, body)
    assert len(kept) == before


def test_the_observer_tallies_one_row_runs_as_tally_observe_does() -> None:
    from gateway.metrics_registry import SCREENING_BATCH_SIZE, Tally
    from gateway.policies.screening.observer import _Observer

    observer, reference = _Observer(deferred=True), Tally(SCREENING_BATCH_SIZE)
    for size in (1, 1, 3, 1, 256, 1, 2):
        observer.batch(size, 0.0001)
        reference.observe(size)
    assert observer.sizes.counts == reference.counts and observer.sizes.total == reference.total
    assert sum(observer.seconds.counts) == 7


# --- the memo against the uncached path -----------------------------------------------------------------
ECHO, ITEM, OTHER = "echo.v1.EchoService.Echo", "echo.v1.EchoService.GetItem", "echo.v1.EchoService.Other"
# (route, path, query, message): benign and attacks, protobuf messages (keyed by their bytes), a parsed
# JSON document and no message (keyed by their values); BODY on two routes with other settings.
REQUESTS: list[tuple[str, str, dict[str, str], object]] = [
    (ECHO, "/v1/echo", {}, BODY),
    (ECHO, "/v1/echo", {}, ATTACK),
    (ECHO, "/v1/echo", {}, {"message": "<script>alert(document.cookie)</script>", "labels": {"user": "bob"}}),
    (ECHO, "/v1/echo", {}, {"message": "see ../../../../etc/passwd; cat /etc/shadow", "repeat": 2}),
    (OTHER, "/v1/echo", {}, BODY),
    (ITEM, "/v1/items/item-1", {"q": "hello"}, "item-1"),
    (ITEM, "/v1/items/item-1", {"q": "1' OR '1'='1"}, "item-1"),
    (ECHO, "/v1/echo", {}, ("json", ATTACK)),
    (ITEM, "/v1/items/item-1", {"q": "hello"}, None),
]


def _send(policy: object, request: tuple[str, str, dict[str, str], object], request_id: str
          ) -> tuple[str, dict[str, object], bytes]:
    route, path, query, body = request
    message: object
    if isinstance(body, dict):
        message = json_format.Parse(json.dumps(body), echo_pb2.EchoRequest())
    elif isinstance(body, str):
        message = echo_pb2.GetItemRequest(id=body)
    elif isinstance(body, tuple):
        message = body[1]  # a parsed JSON document, as a passthrough route gives
    else:
        message = None
    call = Call(request_id, "POST" if path == "/v1/echo" else "GET", path, "127.0.0.1",
                CIMultiDict({"User-Agent": "curl/8.5.0", "Accept": "*/*"}), CIMultiDict(query), route=route)
    policy.on_request(call)  # type: ignore[attr-defined]
    try:
        policy.on_message(call, message)  # type: ignore[attr-defined]
        outcome, reply = "allowed", b""
    except Reply as exc:
        outcome, reply = "blocked", exc.body
    policy.on_complete(call)  # type: ignore[attr-defined]
    return outcome, call.attributes["screening"], reply


def _tallies(policy: object) -> object:
    return ({key: entry[0] for key, entry in policy._tallies.decisions.items()},  # type: ignore[attr-defined]
            {route: (t.counts, t.total) for route, t in policy._tallies.scores.items()},  # type: ignore[attr-defined]
            {route: sum(t.counts) for route, t in policy._tallies.durations.items()},  # type: ignore[attr-defined]
            policy.shadow_scored, policy.shadow_disagreements)  # type: ignore[attr-defined]


def test_the_memo_gives_the_notes_replies_and_tallies_of_the_uncached_path() -> None:
    """Two policies on the same models: one with its memo, one whose memo is emptied before each request
    (every request scored as new). Through repeats, an activate, a shadow, a rollback and the shadow's
    removal, each request gets the same note, the same reply (its own request id in a block) and the
    same tallies; the memo decided most of them, and its hits reach the Prometheus counter."""
    configs = RouteConfigs(ScreeningConfig(mode="block", top_features=5),
                           {ITEM: ScreeningConfig(mode="monitor", top_features=2),
                            OTHER: ScreeningConfig(mode="block", top_features=1, threshold=0.01)})
    memo, plain = build(configs), build(configs)
    for policy in (memo, plain):
        asyncio.run(policy.start())
    try:
        REGISTRY.get_sample_value("portcullis_screening_memo_hits_total")  # pushes what other tests left
        pushed = REGISTRY.get_sample_value("portcullis_screening_memo_hits_total") or 0.0

        def rounds(step: str, n: int) -> None:
            for i in range(n):
                for j, request in enumerate(REQUESTS):
                    plain._kept.clear()
                    plain._seen.clear()
                    request_id = f"{step}-{i}-{j}"
                    assert _send(memo, request, request_id) == _send(plain, request, request_id), request_id
            assert _tallies(memo) == _tallies(plain)

        rounds("first", 4)  # 2026.11.29-3, the latest
        for policy in (memo, plain):
            asyncio.run(policy.activate("2026.11.29-2"))
        rounds("activated", 3)
        for policy in (memo, plain):
            asyncio.run(policy.set_shadow("2026.11.29-3"))
        rounds("shadow", 3)
        assert memo.shadow_scored == 3 * len(REQUESTS) and memo.shadow_disagreements == 3  # BODY on OTHER
        for policy in (memo, plain):
            asyncio.run(policy.rollback())  # back to 2026.11.29-3, which stops being the shadow
        rounds("rolled-back", 3)
        assert memo.shadow_scored == 3 * len(REQUESTS) and memo.shadow_disagreements == 3  # BODY on OTHER
        for policy in (memo, plain):
            asyncio.run(policy.set_shadow("2026.11.29-2"))
        rounds("other-shadow", 3)
        assert memo.shadow_scored == 3 * len(REQUESTS) and memo.shadow_disagreements == 3  # BODY on OTHER
        for policy in (memo, plain):
            asyncio.run(policy.set_shadow(None))
        rounds("no-shadow", 3)
        hits = memo._tallies.memo_hits
        # The first step's first two rounds score every request (the first notes its key, the second keeps
        # it), each later step's first round scores the kept ones again (other models); the rest are hits,
        # but for BODY on ECHO and on OTHER: one key (same head, same message), two route configs.
        assert hits == (2 + 5 * 2) * (len(REQUESTS) - 2) and plain._tallies.memo_hits == 0
        assert REGISTRY.get_sample_value("portcullis_screening_memo_hits_total") == pushed + hits
    finally:
        for policy in (memo, plain):
            asyncio.run(policy.stop())


def test_an_outcome_serves_only_the_models_it_was_worked_out_with() -> None:
    """A swap through the scorer itself (not the policy's admin methods, which also drop the kept
    outcomes) leaves an outcome of the old models in the memo: the identity check on every hit keeps it
    from being served, and the request is scored with the current ones."""
    screening = build(RouteConfigs(ScreeningConfig(mode="block", top_features=5)))
    asyncio.run(screening.start())
    try:
        scorer = screening.scorer
        assert scorer is not None
        first = [_screen(screening, BODY) for _ in range(3)][-1]  # kept, then a hit
        other = screening.registry.load("request-screening", "2026.11.29-2")
        assert other.key != first[1]["model"]
        for change in (lambda: scorer.activate(other), lambda: scorer.set_shadow(scorer.previous)):
            change()
            hits = screening._tallies.memo_hits  # type: ignore[attr-defined]
            outcome, note = _screen(screening, BODY)
            assert screening._tallies.memo_hits == hits  # scored, not served
            assert note["model"] == scorer.active.key and note.get("shadow", {}).get("model") == (
                scorer.shadow.key if scorer.shadow else None)
            assert _screen(screening, BODY) == (outcome, note)  # then served, for these models
            assert screening._tallies.memo_hits == hits + 1  # type: ignore[attr-defined]
    finally:
        asyncio.run(screening.stop())


def test_batch_inference_keeps_the_outcome_once_scored_and_decides_repeats_at_once() -> None:
    screening = build(RouteConfigs(ScreeningConfig(mode="block", top_features=5, inference="batch")))

    async def run() -> list[tuple[bool, str, dict[str, object]]]:
        await screening.start()
        seen = []
        for body in (BODY, BODY, BODY, ATTACK, ATTACK, ATTACK):
            call = Call("r", "POST", "/v1/echo", "127.0.0.1", CIMultiDict({"User-Agent": "curl/8.5.0"}),
                        CIMultiDict(), route="echo.v1.EchoService.Echo")
            screening.on_request(call)
            outcome, at_once = "allowed", True
            try:
                waiting = screening.on_message(call, json_format.Parse(json.dumps(body), echo_pb2.EchoRequest()))
                if waiting is not None:
                    at_once = False
                    await waiting
            except Reply:
                outcome = "blocked"
            screening.on_complete(call)
            seen.append((at_once, outcome, call.attributes["screening"]))
        await screening.stop()
        return seen

    seen = asyncio.run(run())
    assert [at_once for at_once, _, _ in seen] == [False, False, True, False, False, True]  # scored twice, then memo
    assert seen[0][1:] == seen[1][1:] == seen[2][1:] and seen[2][1] == "allowed"
    assert seen[3][1:] == seen[4][1:] == seen[5][1:] and seen[5][1] == "blocked"
