"""The `portcullis` command: serve, check, openapi, keys, screening and models."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from gateway.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="portcullis", description="REST/JSON to gRPC API gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve the gateway")
    p_serve.add_argument("-c", "--config", type=Path, required=True)
    p_serve.add_argument("--workers", type=int, default=None, help="worker processes (overrides config)")
    p_check = sub.add_parser("check", help="validate a config and print the route table")
    p_check.add_argument("-c", "--config", type=Path, required=True)
    p_openapi = sub.add_parser("openapi", help="print the OpenAPI 3 document of a config")
    p_openapi.add_argument("-c", "--config", type=Path, required=True)
    from gateway.policies.auth import keys_cli

    keys_cli.register(sub)
    from screening import cli as screening_cli

    screening_cli.register(sub)
    args = parser.parse_args(argv)
    if args.command == "keys":
        return keys_cli.run(args)
    if args.command in ("screening", "models"):
        return screening_cli.run(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            from gateway.supervisor import serve

            return serve(args.config, args.workers)
        config = load_config(args.config)
        from gateway.runtime import build_runtime

        runtime = build_runtime(config)
        if args.command == "check":
            print(f"{args.config}: ok, {len(runtime.routes.bindings)} routes")
            for row in runtime.routes.describe():
                print(f"  {row['http_method']:7} {row['path']:45} -> {row['grpc_method']}")
            return 0
        from translators.openapi import build_openapi

        print(json.dumps(build_openapi(runtime.routes), indent=2))
        return 0
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ValueError as exc:  # descriptor, template and route errors name their source
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
