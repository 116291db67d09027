"""The capture format, redaction, rotation and reader (no sockets)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from screening import capture, dataset
from screening.record import RequestRecord, from_parts

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def redacted(rec: RequestRecord) -> dict[str, str]:
    return {f"{loc}.{k}": v for loc in ("query", "headers", "body") for k, v in getattr(rec, loc)}


def test_credentials_and_configured_fields_are_redacted_and_the_rest_kept() -> None:
    rec = from_parts(
        "POST", f"/v1/session/{JWT}", [("q", "books"), ("apiKey", "k-123"), ("ref", f"Bearer {JWT}")],
        {"Authorization": "Bearer abc", "Cookie": "sid=s3cr3t", "X-API-Key": "key-1", "X-Partner": "p-9",
         "User-Agent": "curl/8"},
        {"user": {"name": "O'Brien", "password": "hunter2", "ssn": "123-45-6789"},
         "cards": [{"number": "4111111111111111", "holder": "Ann"}], "note": "token abcdef", "Access-Token": "t"},
        ("authorization", "cookie", "x-api-key", "x-partner", "user-agent"),
    )
    redactor = capture.Redactor.build(headers=("X-Partner",), fields=("SSN", "cards[].number"))
    out = redacted(redactor.record(rec))
    assert out["headers.user-agent"] == "curl/8" and out["body.user.name"] == "O'Brien"
    assert out["query.q"] == "books" and out["body.cards[].holder"] == "Ann"
    for key in ("headers.authorization", "headers.cookie", "headers.x-api-key", "headers.x-partner",
                "query.apiKey", "query.ref", "body.user.password", "body.user.ssn", "body.cards[].number",
                "body.note", "body.Access-Token"):
        assert out[key] == capture.REDACTED, key
    text = json.dumps(redactor.record(rec).to_json())
    for secret in ("abc", "s3cr3t", "key-1", "p-9", "k-123", JWT, "hunter2", "6789", "4111", "abcdef"):
        assert secret not in text, secret


def test_hidden_headers_and_query_keys_of_auth_policies_are_redacted() -> None:
    rec = from_parts("GET", "/x", [("sig", "zzz")], {"X-Custom-Key": "ck"}, None, ("x-custom-key",))
    out = capture.Redactor.build().record(rec, {"x-custom-key"}, {"sig"})
    assert out.headers == (("x-custom-key", capture.REDACTED),) and out.query == (("sig", capture.REDACTED),)


@pytest.mark.parametrize("field", ["", ".", "[]", "#"])
def test_a_redact_field_that_names_nothing_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match="redact field"):
        capture.Redactor.build(fields=(field,))


def test_lines_read_back_as_benign_capture_rows(tmp_path: Path) -> None:
    rec = from_parts("GET", "/v1/items/7", [("verbose", "true")])
    path = tmp_path / "traffic.jsonl"
    path.write_bytes(capture.line(rec, "req-1", "echo.v1.EchoService.GetItem", 1.5) + b'{"torn": ' + b"\n\n")
    read = capture.read(path)
    assert read.skipped == 1 and len(read.rows) == 1
    row = read.rows[0]
    assert (row.record, row.label, row.source, row.family, row.split) == (rec, 0, "capture", "captured", "train")
    # a capture file is a dataset file too (the torn line aside)
    path.write_bytes(capture.line(rec, "req-1", None, 1.5))
    assert dataset.read(path)[0].record == rec


def test_any_label_is_taken_as_benign_and_gzip_is_read(tmp_path: Path) -> None:
    rec = from_parts("GET", "/search", [("q", "<script>")])
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt") as out:
        out.write(json.dumps(dataset.Row(rec, 1, "xss", "mine", "b", "test").to_json()) + "\n")
        out.write(json.dumps(rec.to_json()) + "\n")  # a bare record is accepted too
    rows = capture.read(path).rows
    assert [(r.label, r.split, r.source) for r in rows] == [(0, "train", "capture")] * 2


@pytest.mark.parametrize("content", [b"", b"\n\n", b"not json\n", b'{"r": 3}\n', b"[1]\n"])
def test_a_file_without_records_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="no captured records"):
        capture.read(path)


def test_the_file_rotates_by_size_and_keeps_the_backups(tmp_path: Path) -> None:
    path = tmp_path / "cap" / "t.jsonl"
    out = capture.CaptureFile(path, max_bytes=1024, backups=2)
    lines = [capture.line(from_parts("GET", f"/p/{i:04d}"), f"r{i}", None, 0.0) for i in range(60)]
    size = len(lines[0])
    for i in range(0, 60, 7):
        out.write(lines[i : i + 7])
    files = out.files()
    assert [p.name for p in files] == ["t.jsonl.2", "t.jsonl.1", "t.jsonl"]
    assert all(p.stat().st_size <= 1024 for p in files)
    kept = [row.record.path for p in files for row in capture.read(p).rows]
    assert kept == sorted(kept) and kept[-1] == "/p/0059"  # oldest first, nothing reordered
    assert len(kept) >= 2 * (1024 // size)
    none = capture.CaptureFile(tmp_path / "n.jsonl", max_bytes=1024, backups=0)
    for i in range(0, 60, 7):
        none.write(lines[i : i + 7])
    assert [p.name for p in none.files()] == ["n.jsonl"] and (tmp_path / "n.jsonl").stat().st_size <= 1024
