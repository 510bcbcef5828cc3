"""`olmo3 tools list|call`, run as the real console script against the real test MCP server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SERVER = Path(__file__).with_name("mcp_test_server.py")


def olmo3_script() -> str:
    beside = Path(sys.executable).with_name("olmo3")
    found = str(beside) if beside.exists() else shutil.which("olmo3")
    assert found, "the olmo3 console script is not installed (pip install -e .)"
    return found


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    return subprocess.run([olmo3_script(), "tools", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture()
def config(tmp_path) -> Path:
    (tmp_path / "notes.txt").write_text("hello from a file")
    spec = {"command": sys.executable, "args": [str(SERVER)], "env": {"OLMO_TEST_ROOT": str(tmp_path)}}
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"test": spec}}))
    return path


def test_list_as_a_table_and_as_json_with_switches_and_a_failing_server(config, tmp_path):
    out = run("list", "--config", str(config), home=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SERVER", "ON", "DESCRIPTION"]
    assert lines[1].split() == ["add", "test", "yes", "Add", "two", "numbers."]
    # the switches are read from beside the mcp.json in use; a broken server does not hide the others
    state = {"version": 1, "servers": {"test": {"tools": {"echo": {"enabled": False}, "add": {"always_allow": True}}}}}
    (config.parent / "tools-state.json").write_text(json.dumps(state))
    doc = json.loads(config.read_text())
    doc["mcpServers"]["broken"] = {**doc["mcpServers"]["test"], "args": [str(SERVER), "--fail-start"]}
    doc["mcpServers"]["test"]["autoApprove"] = ["add"]
    config.write_text(json.dumps(doc))
    out = run("list", "--config", str(config), "--json", home=tmp_path)
    assert out.returncode == 1
    listed = json.loads(out.stdout)
    tools = {t["name"]: t for t in listed["tools"]}
    assert list(tools) == ["add", "echo", "read_file", "big", "slow"]
    assert tools["read_file"]["input_schema"]["required"] == ["name"] and tools["read_file"]["server"] == "test"
    assert not tools["echo"]["enabled"] and tools["add"]["always_allow"]
    assert listed["servers"] == [
        {"name": "test", "transport": "stdio", "state": "running"},
        {"name": "broken", "transport": "stdio", "state": "failed"},
    ]
    assert "missing API key TEST_TOKEN" in listed["errors"]["broken"]
    assert "warning: " in out.stderr and "'autoApprove' is not used here" in out.stderr
    assert "MCP server 'broken' could not start" in out.stderr and "missing API key TEST_TOKEN" in out.stderr


def test_call_prints_the_result_and_tool_errors_exit_1(config, tmp_path):
    out = run("call", "read_file", '{"name": "notes.txt"}', "--config", str(config), home=tmp_path)
    assert (out.returncode, out.stdout) == (0, "hello from a file\n"), out.stderr
    out = run("call", "add", '{"a": 2, "b": "x"}', "--config", str(config), "--json", home=tmp_path)
    assert out.returncode == 1
    result = json.loads(out.stdout)
    assert result["is_error"] and "b" in result["text"] and result["name"] == "add" and result["server"] == "test"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["call", "add", "{oops"], "the arguments are not valid JSON"),
        (["call", "add", "[1, 2]"], "must be one JSON object"),
        (["call", "add", "{}", "--timeout", "0"], "--timeout"),
        (["call", "nosuch", "{}"], "no tool called 'nosuch'"),
    ],
)
def test_refused_input_is_one_line_and_exit_2(config, tmp_path, args, words):
    out = run(*args, "--config", str(config), home=tmp_path)
    assert out.returncode == 2
    assert words in out.stderr and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_bad_config_is_refused(tmp_path):
    bad = tmp_path / "mcp.json"
    bad.write_text('{"mcpServers": {"x": {"command": "run", "args": "--fast"}}}')
    out = run("list", "--config", str(bad), home=tmp_path)
    assert out.returncode == 2 and out.stderr == f"olmo3 tools: {bad}: server 'x': \"args\" must be a list of strings\n"
    out = run("call", "add", "{}", "--config", str(tmp_path / "nope.json"), home=tmp_path)
    assert out.returncode == 2 and out.stderr == f"olmo3 tools: {tmp_path / 'nope.json'}: no such file\n"


def test_no_default_config_means_no_servers(tmp_path):
    out = run("list", home=tmp_path)
    assert out.returncode == 0 and out.stdout == ""
    assert "no MCP servers configured in" in out.stderr and "Olmo Desktop" in out.stderr
