"""The API key file and `portcullis keys`: hashing, round trips, atomic writes, reloads, the CLI."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.__main__ import main
from gateway.policies.auth import keystore
from gateway.policies.auth.keystore import KeyFile, KeyFileError, KeyIndex, KeyRecord, KeyStore


def test_keys_are_random_prefixed_and_only_their_hash_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    key, record = keystore.add(path, "alice", ("echo.read",), "gold")
    other, _ = keystore.add(path, "bob")
    assert key.startswith("pk_") and len(key) >= 3 + 43 and key != other
    assert record.hash == keystore.hash_key(key) and record.prefix == key[:7]
    text = path.read_text()
    assert key not in text and key[7:20] not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [k.consumer for k in keystore.read(path).keys] == ["alice", "bob"]
    assert list(tmp_path.glob("*.tmp")) == []


def test_index_lookup_ok_unknown_revoked_and_oversized(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key, record = keystore.add(path, "alice", ("a", "b"), "gold")
    index = KeyIndex.of(keystore.read(path))
    found, outcome = index.lookup(key)
    assert outcome == "ok" and found == record and found.tier == "gold"
    assert index.lookup(key + "x") == (None, "unknown_key")
    assert index.lookup("pk_" + "a" * 400) == (None, "unknown_key")
    keystore.revoke(path, record.id)
    assert KeyIndex.of(keystore.read(path)).lookup(key) == (None, "revoked_key")
    json.loads(path.read_text())  # the .json suffix writes JSON


def test_revoke_keeps_the_record_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    _, record = keystore.add(path, "alice")
    first = keystore.revoke(path, record.id)
    again = keystore.revoke(path, record.id)
    assert first.revoked is not None and again.revoked == first.revoked
    assert len(keystore.read(path).keys) == 1
    with pytest.raises(KeyFileError, match="no key with id 'k_00000000'"):
        keystore.revoke(path, "k_00000000")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("keys: [\n", "not valid YAML"),
        ("keys:\n  - id: nope\n", "keys.0.id"),
        ("version: 2\n", "version"),
        ("surprise: 1\n", "surprise: Extra inputs are not permitted"),
    ],
)
def test_bad_files_name_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeyFileError) as info:
        keystore.read(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    keystore.add(path, "alice")
    doc = keystore.read(path).model_dump(mode="json")
    doc["keys"].append({**doc["keys"][0], "hash": "sha256:" + "0" * 64})
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="two keys share one id"):
        keystore.read(path)


def test_consumer_scopes_and_tier_are_checked() -> None:
    with pytest.raises(ValueError, match="consumer"):
        keystore.new_record("pk_x", "has space")
    with pytest.raises(ValueError, match="scope"):
        keystore.new_record("pk_x", "alice", ('bad"scope',))
    with pytest.raises(ValueError, match="tier"):
        keystore.new_record("pk_x", "alice", tier="gold!")


_consumer = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
_scope = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'), min_size=1,
                 max_size=20)
_when = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
_record = st.builds(
    KeyRecord,
    id=st.from_regex(r"k_[0-9a-f]{8,32}", fullmatch=True),
    consumer=_consumer,
    hash=st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True),
    prefix=st.from_regex(r"pk_[A-Za-z0-9_-]{4}", fullmatch=True),
    scopes=st.lists(_scope, max_size=4).map(tuple),
    tier=st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True),
    created=_when,
    revoked=st.none() | _when,
)
_files = st.lists(_record, max_size=5, unique_by=(lambda r: r.id, lambda r: r.hash)).map(
    lambda keys: KeyFile(keys=tuple(keys))
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=_files, suffix=st.sampled_from([".yaml", ".yml", ".json"]))
def test_key_file_round_trip(tmp_path: Path, keys: KeyFile, suffix: str) -> None:
    path = tmp_path / f"keys{suffix}"
    keystore.write(path, keys)
    assert keystore.read(path) == keys
    assert keystore.parse(keystore.render(keys, path), path) == keys


def test_a_cached_key_stops_working_when_revoked_and_only_good_keys_are_cached(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    key, record = keystore.add(path, "alice")
    store = KeyStore(path)
    for _ in range(3):
        assert store.index.lookup(key) == (record, "ok")  # the first hashes, the next hit the cache
    assert store.index.lookup("pk_wrong") == (None, "unknown_key")
    assert list(store.index._hits) == [key]  # a wrong key is never remembered
    keystore.revoke(path, record.id)
    assert store.refresh() is True
    assert store.index.lookup(key) == (None, "revoked_key")


def test_the_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keystore, "HITS_CACHED", 2)
    path = tmp_path / "keys.yaml"
    keys = [keystore.add(path, f"c{i}")[0] for i in range(3)]
    index = KeyIndex.of(keystore.read(path))
    for key in keys:
        assert index.lookup(key)[1] == "ok"
    assert len(index._hits) <= 2 and all(index.lookup(k)[1] == "ok" for k in keys)


def test_store_reloads_on_change_and_keeps_the_last_good_index(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                                ) -> None:
    path = tmp_path / "keys.yaml"
    key, record = keystore.add(path, "alice")
    store = KeyStore(path)
    assert store.refresh() is False  # unchanged
    keystore.revoke(path, record.id)
    assert store.refresh() is True and store.index.lookup(key)[1] == "revoked_key"
    new, _ = keystore.add(path, "bob")
    assert store.refresh() is True and store.index.lookup(new)[1] == "ok"
    good = store.index
    path.write_text("keys: [\n")
    assert store.refresh() is False and store.index is good
    assert store.refresh() is False  # the same bad version is reported once
    assert sum("not reloaded" in r.message for r in caplog.records) == 1
    os.unlink(path)
    assert store.refresh() is False and store.index is good
    keystore.add(path, "carol")
    assert store.refresh() is True and [r.consumer for r in store.index.active.values()] == ["carol"]


def test_cli_add_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.yaml"
    assert main(["keys", "add", "--file", str(path), "--consumer", "alice", "--scopes", "a, b", "--tier", "gold"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("pk_") and "\n" not in key and "not shown again" in err
    (record,) = keystore.read(path).keys
    assert record.scopes == ("a", "b") and record.tier == "gold"
    assert main(["keys", "list", "--file", str(path)]) == 0
    listing = capsys.readouterr().out
    assert record.id in listing and "alice" in listing and "gold" in listing and "active" in listing
    assert key not in listing and record.hash not in listing and record.hash[7:] not in listing
    assert main(["keys", "list", "--file", str(path), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["id"] == record.id and row["revoked"] is None and "hash" not in row
    assert main(["keys", "revoke", "--file", str(path), "--id", record.id]) == 0
    assert record.id in capsys.readouterr().out
    assert main(["keys", "list", "--file", str(path)]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", "--file", str(path), "--id", "k_ffffffff"]) == 2
    assert "no key with id" in capsys.readouterr().err
    assert main(["keys", "list", "--file", str(tmp_path / "missing.yaml")]) == 2
    assert main(["keys", "add", "--file", str(path), "--consumer", "with space"]) == 2
