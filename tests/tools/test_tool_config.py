"""mcp.json (the mcpServers shape of Claude Desktop, LM Studio, Cursor) and the per-tool state file."""

from __future__ import annotations

import json

import pytest

from olmo3.tools.config import (
    HttpServer,
    StdioServer,
    ToolConfigError,
    ToolState,
    load_config,
    parse_config,
)


def test_reads_stdio_and_http_servers(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "files": {
                        "command": "npx",
                        "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
                        "env": {"DEBUG": "1"},
                        "cwd": "~/work",
                    },
                    "web": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer x"}},
                    "vscode": {"type": "http", "url": "http://127.0.0.1:3000/mcp"},
                    "off": {"command": "uvx", "args": ["thing"], "disabled": True, "autoApprove": ["a"]},
                }
            }
        )
    )
    config = load_config(path)
    assert [s.name for s in config.servers] == ["files", "web", "vscode", "off"]
    files = config.get("files")
    assert files == StdioServer(
        "files", "npx", ("-y", "@modelcontextprotocol/server-filesystem", "/tmp"), {"DEBUG": "1"}, f"{tmp_path}/work"
    )
    assert config.get("web") == HttpServer("web", "https://example.com/mcp", {"Authorization": "Bearer x"})
    assert isinstance(config.get("vscode"), HttpServer)
    off = config.get("off")
    assert isinstance(off, StdioServer) and off.disabled
    # keys other apps use are not errors, but the person is told they do nothing here
    assert config.warnings == (f"{path}: server 'off': 'autoApprove' is not used here",)


def test_vscode_servers_key():
    config = parse_config({"servers": {"a": {"command": "x"}}})
    assert config.servers == (StdioServer("a", "x"),)


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ([], "expected a JSON object"),
        ({}, 'no "mcpServers"'),
        ({"mcpServers": []}, "must be an object"),
        ({"mcpServers": {"a": "npx"}}, "server 'a': expected an object"),
        ({"mcpServers": {"a": {}}}, "server 'a': needs \"command\""),
        ({"mcpServers": {"a": {"command": ""}}}, "server 'a': \"command\" must be a non-empty string"),
        ({"mcpServers": {"a": {"command": "x", "args": "-y"}}}, "server 'a': \"args\" must be a list"),
        ({"mcpServers": {"a": {"command": "x", "args": ["ok", 3]}}}, '"args" item 2 must be a string, not a number'),
        ({"mcpServers": {"a": {"command": "x", "env": {"K": 1}}}}, "server 'a': \"env\" → 'K' must be a string"),
        ({"mcpServers": {"a": {"command": "x", "env": []}}}, '"env" must be an object of strings'),
        ({"mcpServers": {"a": {"command": "x", "headers": {}}}}, '"headers" is for "url" servers'),
        ({"mcpServers": {"a": {"command": "x", "url": "http://h"}}}, 'both "command" and "url"'),
        ({"mcpServers": {"b": {"url": "ftp://h/x"}}}, "server 'b': \"url\" must be an http:// or https://"),
        ({"mcpServers": {"b": {"url": "http://h", "args": []}}}, '"args" is for "command" servers'),
        ({"mcpServers": {"b": {"url": "http://h", "headers": {"X": "a\r\nB: c"}}}}, "line break"),
        ({"mcpServers": {"b": {"type": "sse", "url": "http://h/sse"}}}, "not supported"),
        ({"mcpServers": {"b": {"type": "grpc", "url": "http://h"}}}, "\"type\" 'grpc'"),
        ({"mcpServers": {"b": {"type": "stdio", "url": "http://h"}}}, '"type": "stdio" needs "command"'),
        ({"mcpServers": {"b": {"command": "x", "disabled": "yes"}}}, '"disabled" must be true or false'),
        ({"mcpServers": {"": {"command": "x"}}}, "not a usable server name"),
        ({"mcpServers": {"a": {"command": "x\x00y"}}}, "NUL"),
    ],
)
def test_errors_name_the_server_and_the_key(doc, words):
    with pytest.raises(ToolConfigError) as info:
        parse_config(doc, source="mcp.json")
    assert words in str(info.value)
    assert str(info.value).startswith("mcp.json")


def test_file_errors_are_bounded_and_clear(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text('{"mcpServers": {"a": {"command": "x",}}}')
    with pytest.raises(ToolConfigError, match=r"not valid JSON: .* line 1, column"):
        load_config(path)
    path.write_text("[" * 10_000 + "]" * 10_000)
    with pytest.raises(ToolConfigError, match="nested more than 32 levels"):
        load_config(path)
    path.write_bytes(b" " * (2 << 20))
    with pytest.raises(ToolConfigError, match="too large"):
        load_config(path)
    path.write_bytes(b'{"mcpServers": {"\xff": {}}}')
    with pytest.raises(ToolConfigError, match="not UTF-8"):
        load_config(path)
    path.write_bytes(b'\xef\xbb\xbf{"mcpServers": {}}')  # a BOM, as some Windows editors write
    assert load_config(path).servers == ()
    with pytest.raises(ToolConfigError, match="no such file"):
        load_config(tmp_path / "missing.json")


def test_default_file_missing_means_no_servers(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    config = load_config()
    assert config.servers == ()
    assert config.source == str(tmp_path / "Olmo Desktop" / "mcp.json")


def test_tool_state_defaults_changes_and_persistence(tmp_path):
    path = tmp_path / "cfg" / "tools-state.json"
    state = ToolState(path)
    assert state.tool_enabled("fs", "read") and not state.always_allow("fs", "read") and state.server_enabled("fs")
    assert not path.exists()  # nothing written until something changes
    state.set_tool_enabled("fs", "write", False)
    state.set_always_allow("fs", "read", True)
    state.set_server_enabled("web", False)
    again = ToolState(path)
    assert not again.tool_enabled("fs", "write") and again.tool_enabled("fs", "read")
    assert again.always_allow("fs", "read") and not again.always_allow("fs", "write")
    assert not again.server_enabled("web") and not again.tool_enabled("web", "anything")
    assert json.loads(path.read_text()) == again.to_dict()
    assert [p.name for p in path.parent.iterdir()] == ["tools-state.json"]  # the atomic write left no temp file


def test_unreadable_state_is_set_aside_not_lost(tmp_path):
    path = tmp_path / "tools-state.json"
    path.write_text("{not json")
    state = ToolState(path)
    assert state.tool_enabled("a", "b")  # defaults
    state.set_always_allow("a", "b", True)
    assert (tmp_path / "tools-state.json.bad").read_text() == "{not json"
    assert ToolState(path).always_allow("a", "b")
