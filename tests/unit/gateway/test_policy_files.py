"""Relative `*_file` settings of policies resolve against the config file's folder (no sockets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from gateway.config import ConfigError, load_config
from gateway.policies import build_pipeline
from gateway.policies.auth import keystore
from gateway.policies.auth.api_key import ApiKeyPolicy
from gateway.policies.files import resolve_policy_files

CONFIG = """
listen: {port: 0}
descriptors:
  - kind: stubs
    modules: [echo.v1.echo_pb2]
backends:
  echo: {addresses: ["127.0.0.1:50061"]}
services:
  echo.v1.EchoService:
    backend: echo
    policies:
      api_key: {key_file: other-keys.yaml}
policies:
  - name: api_key
    config: {key_file: keys.yaml}
  - name: jwt
    config:
      issuers:
        - {issuer: "https://idp", audiences: [a], algorithms: [ES256], jwks_file: keys/jwks.json}
"""


def test_policy_files_resolve_against_the_config_folder_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    (conf / "keys").mkdir(parents=True)
    keystore.add(conf / "keys.yaml", "alice")
    keystore.add(conf / "other-keys.yaml", "bob")
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwk = json.loads(ECAlgorithm.to_jwk(public)) | {"kid": "k1", "alg": "ES256", "use": "sig"}
    (conf / "keys" / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (conf / "gateway.yaml").write_text(CONFIG)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # where the gateway happens to be started from

    config = load_config(conf / "gateway.yaml")
    assert config.policies[0].config["key_file"] == str(conf / "keys.yaml")
    assert config.policies[1].config["issuers"][0]["jwks_file"] == str(conf / "keys" / "jwks.json")
    assert config.services["echo.v1.EchoService"].policies["api_key"]["key_file"] == str(conf / "other-keys.yaml")
    pipeline = build_pipeline(config)
    api_key = pipeline.policies[0]
    assert isinstance(api_key, ApiKeyPolicy)
    assert set(api_key.stores) == {conf / "keys.yaml", conf / "other-keys.yaml"}


def test_a_relative_file_missing_beside_the_config_is_named_absolutely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gateway.yaml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    keystore.add(tmp_path / "keys.yaml", "alice")  # present in the working directory only
    config = load_config(tmp_path / "gateway.yaml")
    with pytest.raises((ConfigError, ValueError), match=str(tmp_path / "other-keys.yaml")):
        build_pipeline(config)


def test_only_file_settings_under_policies_change() -> None:
    raw = {
        "listen": {"cert_file": "c.pem"},
        "policies": [{"name": "x", "config": {"key_file": "k", "path": "p", "abs_file": "/a", "n_file": 3}}],
        "inference": {"server_policies": {"api_key": {"key_file": "s"}}},
    }
    out = resolve_policy_files(raw, Path("/base"))
    assert out["listen"] == {"cert_file": "c.pem"}  # not a policy: config.py resolves TLS itself
    assert out["policies"][0]["config"] == {"key_file": "/base/k", "path": "/base/p", "abs_file": "/a", "n_file": 3}
    assert out["inference"]["server_policies"]["api_key"]["key_file"] == "/base/s"
