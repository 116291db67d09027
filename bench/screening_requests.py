"""The requests of the screening benchmark, identical for Portcullis and for nginx + ModSecurity.

Owns the typical benign requests (a `POST /v1/echo` with a realistic JSON body of 315 bytes,
the same body with its message varied on every request (`echo-varied`: the wrk thread and a counter
name another store each time, so no cache keyed on a value sees the same message twice), and
`GET /v1/items/item-1?q=hello`, the ModSecurity peer's GET), the 100 KB JSON body, the
curl-like headers every request carries (`Host: localhost:PORT`, so that CRS rule 920350 does not
score a numeric Host; the peer's README), the wrk scripts that send them, and one-shot requests for
the functional checks. Every body is a valid `echo.v1.EchoRequest` (`message`, `repeat`, `labels`),
so Portcullis transcodes and screens it instead of answering 400 before screening runs. And the
Portcullis config these requests are sent to (`screening_config`), which `bench.screening` and
`bench.gateway_instructions --policies screening-off|screening-block` both start.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.gateways import portcullis_config
from bench.procs import HOST

MODEL = "request-screening"  # the shipped screening model's name under models/

USER_AGENT = "curl/7.88.1"
# A support message as a web form would post it: prose with punctuation, a few label fields.
TYPICAL_BODY = {
    "message": (
        "Hi team, could you summarise the Q3 report for the board and send it to Siobhan by Friday? "
        "The figures for the Leeds and Bristol stores are in the shared folder (tab 2). Thanks a lot!"
    ),
    "repeat": 1,
    "labels": {
        "user": "alice.martin",
        "channel": "email",
        "lang": "en-GB",
        "ticket": "SUP-20417",
        "priority": "normal",
    },
}
# An attack that must be blocked wherever screening is on (the functional check proves it is).
ATTACK_BODY = {"message": "1' UNION SELECT username, password FROM users--", "repeat": 1}
BIG_BODY_BYTES = 100 * 1024
_PROSE = (
    "The warehouse in Leeds received {n} pallets on Tuesday; two were damaged in transit and the "
    "driver signed the note. Please check the invoice against the delivery, and ask Bristol whether "
    "their order of {m} units can wait until next week. "
)


def big_body(size: int = BIG_BODY_BYTES) -> dict[str, object]:
    """A benign JSON body of `size` bytes: a long message and many labels, as a bulk import posts."""
    message = "".join(_PROSE.format(n=i, m=3 * i + 7) for i in range(60))
    labels: dict[str, str] = {}
    doc: dict[str, object] = {"message": message, "repeat": 1, "labels": labels}
    i = 0
    while len(_json(doc)) < size:
        labels[f"line-{i:04d}"] = (
            f"SKU {40_000 + i} blue cotton shirt, size M, qty {i % 9 + 1}, shelf B{i % 40}"
        )
        i += 1
    return doc


@dataclass(frozen=True, slots=True)
class Workload:
    """One request shape: what wrk sends, and what a correct answer contains."""

    name: str
    method: str
    path: str
    body: bytes | None
    expect: str  # a substring of a 200 answer
    vary: str | None = None  # a substring of `body` that wrk replaces with a per-request counter

    def url(self, port: int) -> str:
        return f"http://{HOST}:{port}{self.path}"


def _json(doc: Mapping[str, object]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


ECHO = Workload("echo", "POST", "/v1/echo", _json(TYPICAL_BODY), "Bristol stores")
ITEM = Workload("item", "GET", "/v1/items/item-1?q=hello", None, "item-1")
BIG = Workload("big", "POST", "/v1/echo", _json(big_body()), "line-0000")
ATTACK = Workload("attack", "POST", "/v1/echo", _json(ATTACK_BODY), "")
ECHO_VARIED = Workload("echo-varied", "POST", "/v1/echo", _json(TYPICAL_BODY), "stores", vary="Bristol")
WORKLOADS = (ECHO, ECHO_VARIED, ITEM)


def headers(port: int, body: bytes | None) -> dict[str, str]:
    """The curl-like headers of every request to 127.0.0.1:`port`."""
    out = {"Host": f"localhost:{port}", "User-Agent": USER_AGENT, "Accept": "*/*"}
    if body is not None:
        out["Content-Type"] = "application/json"
    return out


def wrk_script(workload: Workload, port: int, folder: Path) -> Path:
    """A wrk Lua script sending `workload` with the curl-like headers; written into `folder`."""
    lines = [
        f"-- {workload.method} {workload.path} (bench/screening_requests.py)",
        f'wrk.method = "{workload.method}"',
        f'wrk.path = "{workload.path}"',
    ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers(port, workload.body).items()]
    if workload.body is not None:
        text = workload.body.decode()
        if "]==]" in text:
            raise ValueError("body would end the Lua long string early")
        if workload.vary is None:
            lines.append(f"wrk.body = [==[{text}]==]")
        else:
            # Each request names another place ("Bristol" -> "Bristol2-48211-4711": wrk thread 2, a run
            # started at second 48211 of its day, request 4711): a new message every time, across threads
            # (each has its own Lua state) and across runs: the counter starts from the run's clock, so
            # the measured run after a warm-up run does not resend the warm-up's messages (it did: the
            # gateway's feature cache then saw them again, and part of the run measured cache hits).
            head, found, tail = text.partition(workload.vary)
            if not found:
                raise ValueError(f"{workload.name}: {workload.vary!r} is not in the body")
            lines += [
                f"local head, tail = [==[{head}{workload.vary}]==], [==[{tail}]==]",
                "local threads, n, run = 0, 0, os.time() % 86400",
                "function setup(thread)",
                "  threads = threads + 1",
                "  thread:set(\"id\", threads)",
                "end",
                "request = function()",
                "  n = n + 1",
                "  return wrk.format(nil, nil, nil, head .. (id or 0) .. \"-\" .. run .. \"-\" .. n .. tail)",
                "end",
            ]
    path = folder / f"scr-{workload.name}-{port}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: str


def send(port: int, method: str, path: str, body: bytes | None, timeout_s: float = 10.0) -> Answer:
    """One request with the benchmark's headers; any HTTP status is an answer. Raises OSError."""
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", data=body, method=method)
    for name, value in headers(port, body).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as response:
            return Answer(response.status, response.read().decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read().decode(errors="replace"))


def check(port: int, workload: Workload, status: int = 200, body: bool = True) -> str | None:
    """None when `workload` gets `status` (and, for 200 with `body`, the expected body); else what went wrong."""
    try:
        answer = send(port, workload.method, workload.path, workload.body)
    except OSError as exc:
        return f"{workload.method} {workload.path}: {exc}"
    if answer.status != status or (status == 200 and body and workload.expect not in answer.body):
        return f"{workload.name}: expected HTTP {status}, got {answer.status} {answer.body[:200]!r}"
    return None


def screening_config(port: int, admin: int, backend_port: int, mode: str, models_dir: Path,
                     version: str) -> dict[str, object]:
    """Portcullis on `port` in front of the echo backend with the metrics policy and screening in `mode`
    with `version` of the screening model under `models_dir`."""
    policies: list[dict[str, object]] = [
        {"name": "metrics"},
        {"name": "screening", "config": {"mode": mode, "models_dir": str(models_dir), "model": MODEL, "version": version}},
    ]
    config = portcullis_config(port, admin, backend_port, policies)
    # `?q=hello` (the ModSecurity peer's GET) is not a GetItemRequest field: pass it, as a lax
    # deployment does, so that the request is transcoded and screened rather than refused.
    config["transcoding"] = {"reject_unknown_query_parameters": False}
    return config
