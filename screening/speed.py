"""Measure what screening costs per request: features, inference, and inline versus batched scoring.

`python -m screening.speed [--model models/NAME/VERSION]` prints, for typical requests (under 1 KB),
the CPU time of feature extraction (warm caches: repeated headers and paths; and cold: every value
new), of one onnxruntime run, of the record built from a request message (`record.from_request`, as
the gateway does) and of the top contributing features of an allowed request; the whole serving
path of one request (record, features, run, top features), warm and cold; and the wall time per
request of the `Scorer` in `inline` and `batch` mode at concurrency 1 and 32. It also times a 100 KB
JSON body. Numbers go to docs/screening.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from screening import features
from screening.inference import Scorer
from screening.record import RequestRecord, from_parts, from_request
from screening.registry import LoadedModel, ModelRegistry, load_folder

AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
WORDS = ("order", "book", "please", "ship", "tomorrow", "O'Brien", "invoice", "copy", "the", "a", "new", "edition",
         "thanks", "address", "12", "Baker", "Street", "refund", "size", "blue")


def typical(rng: random.Random) -> RequestRecord:
    message = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 30)))
    headers = {"User-Agent": AGENT, "Content-Type": "application/json"}
    if rng.random() < 0.5:
        return from_parts("POST", "/v1/echo", [], headers, {"message": message, "repeat": 2, "labels": {"k": "v"}})
    return from_parts("GET", f"/v1/items/item-{rng.randint(1, 500)}", [("verbose", "true"), ("q", message[:40])],
                      headers)


def _message(rng: random.Random) -> object:
    """A typical `echo.v1.EchoRequest` as the REST handler builds it (a protobuf message), or, when the
    generated stubs are missing, its JSON object (the record is the same)."""
    doc = {"message": " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 30))), "repeat": 2,
           "labels": {"user": "alice.martin", "channel": "email", "ticket": f"SUP-{rng.randint(1, 99999)}"}}
    try:
        from google.protobuf import json_format

        import protos

        protos.add_generated_path()
        from echo.v1 import echo_pb2  # type: ignore[import-not-found]
    except (ImportError, RuntimeError):
        return doc
    return json_format.ParseDict(doc, echo_pb2.EchoRequest())


def per_call_us(call: Callable[[], object], n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - started) / n * 1e6


async def scorer_us(model: LoadedModel, mode: Literal["inline", "batch"], concurrency: int, rows: np.ndarray) -> float:
    scorer = Scorer(model, mode=mode)
    scorer.start()
    try:
        queue = list(range(len(rows)))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                await scorer.score(rows[i : i + 1], timeout_s=1.0)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return (time.perf_counter() - started) / len(rows) * 1e6
    finally:
        scorer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m screening.speed")
    parser.add_argument("--model", type=Path, help="a model folder (default: the latest under models/)")
    parser.add_argument("-n", type=int, default=3000)
    args = parser.parse_args(argv)
    model = load_folder(args.model) if args.model else ModelRegistry(Path("models")).load("request-screening")
    rng = random.Random(1)
    records = [typical(rng) for _ in range(args.n)]
    sizes = [len(json.dumps(r.to_json())) for r in records]
    for r in records[:200]:
        features.extract(r)
    out: dict[str, float] = {"typical_request_bytes": float(np.mean(sizes))}
    it = iter(records * 3)
    out["features_us"] = per_call_us(lambda: features.extract(next(it)), args.n)
    features._field_cached.cache_clear()
    fresh = iter([typical(random.Random(i + 10_000)) for i in range(args.n)])
    def cold() -> None:
        features._field_cached.cache_clear()
        features.extract(next(fresh))

    out["features_cold_us"] = per_call_us(cold, args.n)
    row = features.extract(records[0])[None, :]
    out["onnx_run_us"] = per_call_us(lambda: model.run(row), args.n)
    messages = [_message(rng) for _ in range(args.n)]
    headers = {"User-Agent": AGENT, "Content-Type": "application/json", "Accept": "*/*", "Host": "localhost"}
    its = iter(messages * 3)
    out["record_from_message_us"] = per_call_us(lambda: from_request("POST", "/v1/echo", (), headers, next(its)),
                                                args.n)
    out["top_features_us"] = per_call_us(lambda: model.top_features(row[0], 3), args.n)

    def serve(message: object) -> None:
        rec = from_request("POST", "/v1/echo", (), headers, message)
        values = features.field_values(rec)
        vector = features.combine(features.field_vectors(values), rec.dropped)
        model.run(vector[None, :])
        model.top_features(vector, 3)

    for message in messages[:200]:
        serve(message)
    its = iter(messages * 3)
    out["serving_path_us"] = per_call_us(lambda: serve(next(its)), args.n)
    fresh_messages = iter([_message(random.Random(i + 20_000)) for i in range(args.n)])

    def serve_cold() -> None:
        features._field_cached.cache_clear()
        serve(next(fresh_messages))

    out["serving_path_cold_us"] = per_call_us(serve_cold, args.n)
    rows = features.extract_many(records)
    for mode in ("inline", "batch"):
        for concurrency in (1, 32):
            out[f"scorer_{mode}_c{concurrency}_us"] = asyncio.run(scorer_us(model, mode, concurrency, rows))  # type: ignore[arg-type]
    big = from_parts("POST", "/v1/echo", [], {}, {"items": [{"text": " ".join(rng.choice(WORDS) for _ in range(12)),
                                                             "n": i} for i in range(1400)]})
    out["body_100kb_bytes"] = float(len(json.dumps(big.to_json())))
    def large() -> None:
        features._field_cached.cache_clear()
        features.extract(big)

    out["body_100kb_features_ms"] = per_call_us(large, 20) / 1000
    for key, value in out.items():
        print(f"{key:32} {value:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
