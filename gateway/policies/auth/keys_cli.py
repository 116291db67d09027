"""`portcullis keys`: issue, list and revoke API keys in a key file.

`add` prints the new key once, on stdout, and nothing else keeps it; `list` shows ids, consumers,
display prefixes, scopes, tiers and dates, never a key or a hash; `revoke` marks a key revoked
(the record stays, for audit). A running gateway picks the change up on its next file check.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC
from pathlib import Path

from gateway.policies.auth import keystore
from gateway.policies.auth.keystore import KeyFileError, KeyRecord


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p_keys = sub.add_parser("keys", help="manage API keys in a key file")
    keys_sub = p_keys.add_subparsers(dest="keys_command", required=True)
    p_add = keys_sub.add_parser("add", help="issue a key; it is printed once")
    p_add.add_argument("--file", type=Path, required=True, help="key file (created if missing)")
    p_add.add_argument("--consumer", required=True, help="who the key belongs to")
    p_add.add_argument("--scopes", default="", help="comma-separated scopes")
    p_add.add_argument("--tier", default="default", help="rate-limit tier")
    p_list = keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    p_list.add_argument("--file", type=Path, required=True)
    p_list.add_argument("--json", action="store_true", help="one JSON object per key")
    p_revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    p_revoke.add_argument("--file", type=Path, required=True)
    p_revoke.add_argument("--id", required=True, dest="key_id")


def run(args: argparse.Namespace) -> int:
    try:
        if args.keys_command == "add":
            scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
            key, record = keystore.add(args.file, args.consumer, scopes, args.tier)
            print(key)
            print(f"id {record.id} for consumer {record.consumer}: store the key now, it is not shown again",
                  file=sys.stderr)
            return 0
        if args.keys_command == "list":
            records = keystore.read(args.file).keys
            if args.json:
                for record in records:
                    print(json.dumps(_row(record)))
            else:
                _table(records)
            return 0
        record = keystore.revoke(args.file, args.key_id)
        print(f"revoked {record.id} ({record.consumer})")
        return 0
    except KeyFileError as exc:
        print(exc, file=sys.stderr)
        return 2


def _row(record: KeyRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "consumer": record.consumer,
        "prefix": record.prefix,
        "scopes": list(record.scopes),
        "tier": record.tier,
        "created": record.created.isoformat(),
        "revoked": record.revoked.isoformat() if record.revoked else None,
    }


def _table(records: tuple[KeyRecord, ...]) -> None:
    header = ("ID", "CONSUMER", "PREFIX", "SCOPES", "TIER", "CREATED", "STATUS")
    rows = [
        (r.id, r.consumer, r.prefix + "...", ",".join(r.scopes) or "-", r.tier,
         r.created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "revoked" if r.revoked else "active")
        for r in records
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
