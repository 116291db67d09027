"""Relative file settings of policies resolve against the config file's folder, not the working directory.

Every `*_file` and `path` setting inside a `policies` mapping or list (the global list, and the per-service,
per-method and inference overrides: any key named `policies` or ending in `_policies`), at any depth
(a JWT issuer's `jwks_file`), is made absolute against the folder of the config file that holds it,
before validation; so `key_file: keys.yaml` beside `gateway.yaml` works whatever directory the
gateway is started from, as TLS and descriptor paths already do. Absolute paths are kept as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_policy_files(raw: Any, base: Path) -> Any:
    """`raw` (the parsed YAML) with every relative `*_file` under a policies key made absolute."""
    return _walk(raw, base, inside=False)


def _is_file_key(key: str) -> bool:
    # `path` is a file in every policy that has one (access_log, capture).
    return key.endswith("_file") or key == "path"


def _walk(node: Any, base: Path, inside: bool) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if inside and isinstance(key, str) and _is_file_key(key) and isinstance(value, str) and value:
                out[key] = str((base / value).resolve()) if not Path(value).is_absolute() else value
            else:
                here = inside or (isinstance(key, str) and (key == "policies" or key.endswith("_policies")))
                out[key] = _walk(value, base, here)
        return out
    if isinstance(node, list):
        return [_walk(item, base, inside) for item in node]
    return node
