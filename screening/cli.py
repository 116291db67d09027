"""The `portcullis screening ...` and `portcullis models ...` subcommands (registered by the gateway CLI).

`screening dataset|train|evaluate|explain` work without a gateway. `models list|activate|rollback|
shadow` talk to a running gateway's admin API (`--admin URL`); `models list` without `--admin` lists
the registry on disk.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_MODELS = Path("models")
DEFAULT_NAME = "request-screening"
DEFAULT_ADMIN = "http://127.0.0.1:9901"


def register(sub: Any) -> None:
    screening = sub.add_parser("screening", help="train, evaluate and explain the request-screening model")
    commands = screening.add_subparsers(dest="screening_command", required=True)
    from screening import dataset

    p_data = commands.add_parser("dataset", help="build (or show) the cached training dataset")
    dataset.add_arguments(p_data)

    p_train = commands.add_parser("train", help="train, export to ONNX and write a manifest")
    p_train.add_argument("--data", type=Path, help="dataset file (default: build or reuse the seeded one)")
    p_train.add_argument("--seed", type=int, default=7)
    p_train.add_argument("--benign", "--capture", dest="benign", type=Path, action="append",
                         help="captured traffic (the capture policy's JSON lines) added as benign training "
                         "background, source 'capture' (repeatable)")
    p_train.add_argument("--out", type=Path, default=DEFAULT_MODELS, help="registry root")
    p_train.add_argument("--name", default=DEFAULT_NAME)
    p_train.add_argument("--version", help="default: the UTC date and time")
    p_train.add_argument("--target-fpr", type=float, default=0.004, help="calibration false-positive rate")
    p_train.add_argument("--exclude-source", action="append", help="leave a source out (repeatable)")
    p_train.add_argument("--params", help="ScreeningModel parameters as JSON")
    p_train.add_argument("--signature", choices=("narrow", "wide"), default="narrow",
                         help="the graph's inputs: narrow (116 dense columns and two n-gram sums) or wide (the vector)")
    p_train.add_argument("--quiet", action="store_true")

    p_narrow = commands.add_parser("narrow", help="re-export a wide model version narrow, as a new version (no training)")
    p_narrow.add_argument("--model", required=True, type=Path, help="the wide version's folder (models/NAME/VERSION)")
    p_narrow.add_argument("--version", required=True, help="the new version (a sibling folder)")

    p_eval = commands.add_parser("evaluate", help="score the held-out split; write a report and plots")
    p_eval.add_argument("--model", required=True, type=Path, help="a model folder (models/NAME/VERSION)")
    p_eval.add_argument("--data", type=Path)
    p_eval.add_argument("--seed", type=int, default=7)
    p_eval.add_argument("--out", type=Path, default=Path("build/screening/report"))
    p_eval.add_argument("--leave-out", action="append", choices=("source", "family"),
                        help="also train without each source/family and test on it (slow)")
    p_eval.add_argument("--write-manifest", action="store_true", help="record the results in the model's manifest")
    p_eval.add_argument("--quiet", action="store_true")

    p_explain = commands.add_parser("explain", help="score one request and show why")
    p_explain.add_argument("--model", type=Path, help="a model folder (default: the latest under models/)")
    p_explain.add_argument("--json", help="a request as JSON: {method, path, query, headers, body}")
    p_explain.add_argument("request", nargs="*", help="curl-like: [-X METHOD] URL [-H 'K: V'] [-d BODY]")
    p_explain.add_argument("--top", type=int, default=8)
    p_explain.add_argument("--descriptors", help="transcode the request into its gRPC request message first, as the "
                                                 "gateway does: stub modules (comma-separated, e.g. echo.v1.echo_pb2) "
                                                 "or a descriptor set file; without it the JSON body is the message")
    p_explain.add_argument("--headers", help="screened headers, comma-separated (the policy's `headers` setting)")
    p_explain.add_argument("--output", choices=("text", "json"), default="text")

    models = sub.add_parser("models", help="the model registry and the serving gateway's model lifecycle")
    models.add_argument("--admin", help=f"admin API of a running gateway, e.g. {DEFAULT_ADMIN}")
    models.add_argument("--root", type=Path, default=DEFAULT_MODELS)
    actions = models.add_subparsers(dest="models_command", required=True)
    actions.add_parser("list", help="versions on disk, or what the gateway serves (with --admin)")
    p_activate = actions.add_parser("activate", help="load, verify and activate a version")
    p_activate.add_argument("version")
    p_activate.add_argument("--name", default=None)
    actions.add_parser("rollback", help="go back to the previous version")
    p_shadow = actions.add_parser("shadow", help="score traffic with a candidate beside the active model")
    p_shadow.add_argument("version", help="a version, or 'off'")
    p_shadow.add_argument("--name", default=None)


def run(args: argparse.Namespace) -> int:
    if args.command == "models":
        return _models(args)
    if args.screening_command == "dataset":
        from screening import dataset

        return dataset.run(args)
    if args.screening_command == "train":
        from screening import train

        return train.run(args)
    if args.screening_command == "narrow":
        from screening import train

        folder = args.model.parent / args.version
        manifest = train.narrow_version(args.model, folder, args.version)
        print(f"{folder}: narrow re-export of {args.model}, golden drift {manifest.metrics['narrow']['golden_drift']:.1e}")
        return 0
    if args.screening_command == "evaluate":
        from screening import evaluate

        return evaluate.run(args)
    return _explain(args)


def parse_request(argv: list[str] | None, raw_json: str | None) -> dict[str, Any]:
    """A request from JSON or curl-like arguments: -X, -H, -d/--data, -A and a URL."""
    if raw_json:
        doc: dict[str, Any] = json.loads(raw_json)
        return doc
    argv = list(argv or [])
    if len(argv) == 1 and " " in argv[0]:
        argv = shlex.split(argv[0])
    if argv and argv[0] == "curl":
        argv = argv[1:]
    method: str | None = None
    url = "/"
    headers: dict[str, str] = {}
    body: str | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-X", "--request"):
            method, i = argv[i + 1], i + 2
        elif arg in ("-H", "--header"):
            key, _, value = argv[i + 1].partition(":")
            headers[key.strip()] = value.strip()
            i += 2
        elif arg in ("-d", "--data", "--data-raw", "--json"):
            body, i = argv[i + 1], i + 2
        elif arg in ("-A", "--user-agent"):
            headers["User-Agent"], i = argv[i + 1], i + 2
        else:
            url, i = arg, i + 1
    from urllib.parse import parse_qsl, urlsplit

    if not url.startswith("/") and "://" not in url:
        url = "http://" + url  # as curl reads `localhost:8080/v1/echo`: a host, not a path
    parts = urlsplit(url)
    parsed_body: Any = None
    if body is not None:
        try:
            parsed_body = json.loads(body)
        except json.JSONDecodeError:
            parsed_body = body
    return {"method": method or ("POST" if body is not None else "GET"), "path": parts.path or "/",
            "query": parse_qsl(parts.query, keep_blank_values=True), "headers": headers, "body": parsed_body}


def transcode(descriptors: str, method: str, url_path: str, query: list[tuple[str, str]], body: Any) -> Any:
    """The request message the gateway's REST handler builds for this request (routes compiled from
    `descriptors`; unknown query parameters and fields ignored, as explain scores what it can).
    Raises ValueError when no route matches or the request does not transcode."""
    from translators import descriptors as sources
    from translators.errors import GatewayError
    from translators.options import TranscodeOptions
    from translators.request import build_request
    from translators.routes import compile_routes

    spec = descriptors.strip()
    if Path(spec).is_file():
        services = sources.from_descriptor_set(spec)
    else:
        services = sources.from_modules([m.strip() for m in spec.split(",") if m.strip()])
    lax = TranscodeOptions(reject_unknown_query_parameters=False, reject_unknown_fields=False)
    routes = compile_routes(services, lambda _name: lax)
    raw = b"" if body is None else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    try:
        binding, variables = routes.match(method, url_path)
        return build_request(binding.request, variables, query, "application/json", raw)
    except GatewayError as exc:
        raise ValueError(f"{method} {url_path}: {exc}") from None


def explain(request: dict[str, Any], model: Any, descriptors: str | None = None,
            screened_headers: tuple[str, ...] | None = None, top: int = 8) -> dict[str, Any]:
    """Score one request as the gateway's screening policy does: the same record (`record.from_request`
    over the same request message), features, model and threshold; and why."""
    from urllib.parse import unquote

    from screening import features, record

    method = str(request.get("method", "GET")).upper()
    url_path = str(request.get("path", "/"))
    query = [(str(k), str(v)) for k, v in request.get("query", [])]
    message = request.get("body")
    if descriptors:
        message = transcode(descriptors, method, url_path, query, message)
    rec = record.from_request(method, unquote(url_path), query, request.get("headers", {}), message,
                              screened_headers or record.SCREENED_HEADERS)
    values = features.field_values(rec)
    vector = features.combine(features.field_vectors(values), rec.dropped)
    score, probability, anomaly = (float(v) for v in model.run(vector[None, :])[0])
    threshold = model.manifest.threshold
    return {
        "model": model.key, "threshold": threshold, "score": score, "verdict": "block" if score >= threshold else "allow",
        "attack_probability": probability, "anomaly": anomaly, "record": rec.to_json(),
        "top_features": features.top_contributions(vector, model.weights, top, values, model.baseline),
    }


def _explain(args: argparse.Namespace) -> int:
    from screening import preprocess, record, tokens
    from screening.registry import ModelRefused, ModelRegistry, load_folder

    try:
        request = parse_request(args.request, args.json)
        if args.model:
            model = load_folder(args.model)
        else:
            model = ModelRegistry(DEFAULT_MODELS).load(DEFAULT_NAME)
        headers = tuple(h.strip() for h in args.headers.split(",") if h.strip()) if args.headers else None
        result = explain(request, model, args.descriptors, headers, args.top)
    except (ModelRefused, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(result, indent=2))
        return 0
    print(f"model {result['model']}  threshold {result['threshold']:.4f}")
    print(f"score {result['score']:.4f} -> {result['verdict'].upper() if result['verdict'] == 'block' else 'allow'} "
          f"(classifier {result['attack_probability']:.4f}, anomaly {result['anomaly']:+.4f})")
    print("\nfields (normalised -> token classes):")
    for field in record.RequestRecord.from_json(result["record"]).fields():
        text = preprocess.normalize(field.value)
        classes = " ".join(tokens.NAMES[c - 1] for c in tokens.classes(text)[:24])
        print(f"  {field.name:24} {text[:70]!r}\n  {'':24} {classes}")
    print("\ntop contributions (classifier weight x (feature value - benign average)):")
    for name, value in result["top_features"]:
        print(f"  {value:+8.3f}  {name}")
    return 0


def _admin(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base.rstrip("/") + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _models(args: argparse.Namespace) -> int:
    if args.models_command == "list" and not args.admin:
        from screening.registry import ModelRegistry

        registry = ModelRegistry(args.root)
        for name in registry.names():
            for version in registry.versions(name):
                manifest = registry.manifest(name, version)
                print(f"{name}/{version}  schema {manifest.feature_schema}  threshold {manifest.threshold:.4f}  "
                      f"sha256 {manifest.sha256[:12]}")
        return 0
    base = args.admin or DEFAULT_ADMIN
    if args.models_command == "list":
        status, doc = _admin(base, "GET", "/admin/models")
    elif args.models_command == "activate":
        status, doc = _admin(base, "POST", "/admin/models/activate", {"version": args.version, "name": args.name})
    elif args.models_command == "rollback":
        status, doc = _admin(base, "POST", "/admin/models/rollback", {})
    else:
        candidate: str | None = None if args.version == "off" else args.version
        status, doc = _admin(base, "POST", "/admin/models/shadow", {"version": candidate, "name": args.name})
    print(json.dumps(doc, indent=2))
    return 0 if status < 400 else 1
