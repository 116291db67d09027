"""Config validation: every error names the file, the key path and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.__main__ import main
from gateway.config import ConfigError, load_config

VALID = """
listen: {port: 0}
descriptors:
  - kind: stubs
    modules: [echo.v1.echo_pb2]
backends:
  echo: {addresses: ["127.0.0.1:50061"]}
services:
  echo.v1.EchoService: {backend: echo, timeout_ms: 1000, methods: {Echo: {timeout_ms: 50}}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    return path


def test_valid_config_and_precedence(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID + "transcoding: {enums_as_ints: true}\n"))
    assert config.timeout_s("echo.v1.EchoService.Echo") == 0.05
    assert config.timeout_s("echo.v1.EchoService.GetItem") == 1.0
    assert config.options_for("echo.v1.EchoService.Echo").enums_as_ints is True
    assert config.options_for("echo.v1.EchoService.Echo").reject_unknown_fields is True
    with pytest.raises(ValidationError):
        config.listen.port = 1  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VALID.replace("port: 0", "port: 99999"), "listen.port: Input should be less than or equal to 65535"),
        (VALID.replace("timeout_ms: 1000", "timeout_ms: soon"), "services.echo.v1.EchoService.timeout_ms"),
        (VALID + "surprise: 1\n", "surprise: Extra inputs are not permitted"),
        (VALID.replace("backend: echo", "backend: nope"), "unknown backend 'nope'"),
        (VALID.replace('"127.0.0.1:50061"', '"no-port"'), "backends.echo.addresses"),
        (VALID.replace("kind: stubs", "kind: magic"), "descriptors.0"),
        # The backend and WebSocket blocks, declared in their own modules, report the same way.
        (
            VALID.replace("{addresses: [", "{outlier: {max_ejection_percent: 101}, addresses: ["),
            "backends.echo.outlier.max_ejection_percent: Input should be less than or equal to 100",
        ),
        (VALID.replace("{addresses: [", "{tls: {ca: x}, addresses: ["), "backends.echo.tls.ca: Extra inputs"),
        (
            VALID + "websocket: {allowed_origins: ['https://*.example.com']}\n",
            "websocket.allowed_origins: Value error, 'https://*.example.com' is not an origin",
        ),
        (
            VALID + "websocket_routes: [{path: /chat, upstream: 'http://x'}]\n",
            "websocket_routes.0.upstream: Value error, 'http://x' is not a ws:// or wss:// URL",
        ),
        (VALID + "websocket_mux: {path: ws}\n", "websocket_mux.path: Value error, must start with '/'"),
        (
            VALID.replace("timeout_ms: 50}", "timeout_ms: 50, websocket: {heartbeat_s: 0}}"),
            "services.echo.v1.EchoService.methods.Echo.websocket.heartbeat_s: Input should be greater than 0",
        ),
        ("listen: [\n", "not valid YAML"),
        ("- a list\n", "expected a mapping"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_check_command_prints_routes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(write(tmp_path, VALID))]) == 0
    out = capsys.readouterr().out
    assert "ok, 3 routes" in out and "/v1/items/{id}" in out


def test_check_command_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(write(tmp_path, VALID + "nope: 1\n"))]) == 2
    assert "nope" in capsys.readouterr().err


def test_check_names_a_bad_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = VALID + "http_rules:\n  - {selector: echo.v1.EchoService.Chat, post: '/v1/{oops'}\n"
    assert main(["check", "-c", str(write(tmp_path, text))]) == 2
    err = capsys.readouterr().err
    assert "echo.v1.EchoService.Chat" in err and "unbalanced" in err


def test_unknown_service_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = VALID + "  acme.Nope: {backend: echo}\n"
    assert main(["check", "-c", str(write(tmp_path, text))]) == 2
    assert "acme.Nope" in capsys.readouterr().err


def test_shipped_demo_config_checks() -> None:
    assert main(["check", "-c", "config/demo.yaml"]) == 0


def test_websocket_settings_merge_per_service_and_method(tmp_path: Path) -> None:
    text = VALID.replace(
        "services:\n  echo.v1.EchoService: {backend: echo, timeout_ms: 1000, methods: {Echo: {timeout_ms: 50}}}",
        "websocket: {allowed_origins: ['https://A.example'], idle_timeout_s: 30}\n"
        "services:\n  echo.v1.EchoService:\n    backend: echo\n    websocket: {idle_timeout_s: 5}\n"
        "    methods: {Chat: {websocket: {max_message_bytes: 100}}}\n"
        "    transcoding: {stream_format: json_array}\n",
    )
    config = load_config(write(tmp_path, text))
    chat = config.websocket_for("echo.v1.EchoService.Chat")
    assert chat.allowed_origins == ("https://a.example",)  # kept from the global block, lower-cased
    assert (chat.idle_timeout_s, chat.max_message_bytes) == (5, 100)
    assert config.websocket_for("echo.v1.EchoService.Echo").max_message_bytes == 1024 * 1024
    assert config.options_for("echo.v1.EchoService.StreamItems").stream_format == "json_array"


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ("websocket: {allowed_origins: ['*']}", "websocket.allowed_origins"),
        ("websocket: {allowed_origins: ['https://a.example/path']}", "websocket.allowed_origins"),
        ("websocket_routes: [{path: chat, upstream: 'ws://h:1'}]", "websocket_routes.0.path"),
        ("websocket_routes: [{path: /c, upstream: 'http://h:1'}]", "websocket_routes.0.upstream"),
        ("websocket_routes: [{path: /c, upstream: 'ws://h:1'}, {path: /c, upstream: 'ws://h:2'}]", "listed twice"),
        ("transcoding: {stream_format: xml}", "transcoding.stream_format"),
        ("websocket_mux: {enabled: true, path: ws}", "websocket_mux.path"),
        ("websocket_mux: {max_streams: 0}", "websocket_mux.max_streams"),
        ("websocket_mux: {enabled: true, path: /c}\nwebsocket_routes: [{path: /c, upstream: 'ws://h:1'}]",
         "also a websocket_routes path"),
    ],
)
def test_websocket_config_errors_name_the_key(tmp_path: Path, extra: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, VALID + extra + "\n"))
    assert where in str(err.value)
