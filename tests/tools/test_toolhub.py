"""ToolHub against real MCP servers: the SDK test server over stdio, and over streamable HTTP in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from olmo3.tools.config import ToolState, parse_config
from olmo3.tools.toolhub import ToolHub

SERVER = Path(__file__).with_name("mcp_test_server.py")
TOOLS = ["add", "echo", "read_file", "big", "slow"]


def wait_for(predicate, what: str, limit: float = 30.0) -> None:
    """Poll for something another process does; the limit only keeps a broken test from hanging."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stdio_spec(root: Path, name: str, *extra: str) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    return {
        "command": sys.executable,
        "args": [str(SERVER), "--name", name, *extra],
        "env": {"OLMO_TEST_ROOT": str(root)},
    }


@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    """The test server over streamable HTTP on 127.0.0.1, a real subprocess; yields (url, its folder)."""
    root = tmp_path_factory.mktemp("web")
    port_file = root / "port"
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", "--port-file", str(port_file), "--name", "web"],
        env={**os.environ, "OLMO_TEST_ROOT": str(root)},
    )
    try:
        wait_for(lambda: port_file.exists() or proc.poll() is not None, "the HTTP test server's port")
        assert proc.poll() is None, "the HTTP test server exited"
        yield f"http://127.0.0.1:{port_file.read_text()}/mcp", root
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, http_server):
    """One hub with a stdio server, the HTTP server (same tools, so every name clashes) and a broken server."""
    root = tmp_path_factory.mktemp("stdio")
    url, _ = http_server
    config = parse_config(
        {
            "mcpServers": {
                "alpha": stdio_spec(root / "alpha", "alpha"),
                "web": {"url": url},
                "broken": stdio_spec(root / "broken", "broken", "--fail-start"),
                "off": {**stdio_spec(root / "off", "off"), "disabled": True},
            }
        }
    )
    h = ToolHub(config, ToolState(root / "tools-state.json"), max_result_chars=1000)
    h.root = root / "alpha"
    yield h
    h.close()


def test_lists_tools_of_stdio_and_http_servers_with_clear_names(hub):
    tools = hub.list_tools()
    assert [t.name for t in tools] == [f"alpha__{n}" for n in TOOLS] + [f"web__{n}" for n in TOOLS]
    add = tools[0]
    assert (add.server, add.tool, add.description) == ("alpha", "add", "Add two numbers.")
    assert add.input_schema["properties"].keys() == {"a", "b"} and add.input_schema["required"] == ["a", "b"]
    assert add.enabled and not add.always_allow
    states = {s.name: s for s in hub.servers()}
    assert states["alpha"].state == "running" and states["alpha"].tools == 5 and states["alpha"].transport == "stdio"
    assert states["web"].state == "running" and states["web"].transport == "http"
    assert states["off"].state == "disabled" and not (hub.root.parent / "off" / "pid-off").exists()


def test_a_server_that_fails_to_start_says_why_with_its_stderr(hub):
    hub.list_tools()
    error = hub.server_errors()["broken"]
    assert error.startswith("MCP server 'broken' could not start:")
    assert "test server: missing API key TEST_TOKEN" in error  # its stderr tail
    assert {s.name: s.state for s in hub.servers()}["broken"] == "failed"
    # listing again does not spawn it again (it would fail every turn); a refresh (a Retry button) does
    starts = hub.root.parent / "broken" / "starts-broken"
    before = starts.read_text().count("start")
    hub.list_tools()
    assert starts.read_text().count("start") == before
    hub.list_tools(refresh=True)
    assert starts.read_text().count("start") == before + 1
    assert hub.server_errors()["broken"] == error


def test_calls_over_stdio_and_http(hub):
    assert hub.call("alpha__add", {"a": 2, "b": 3}).text == "5.0"
    result = hub.call("web__echo", {"text": 'Zürich 東京 🙂 (a, b) "q"'})
    assert (result.text, result.is_error, result.server, result.name) == (
        'Zürich 東京 🙂 (a, b) "q"',
        False,
        "web",
        "web__echo",
    )
    (hub.root / "notes.txt").write_text("line one\nline two")
    assert hub.call("alpha__read_file", {"name": "notes.txt"}).text == "line one\nline two"


def test_calls_from_many_threads_at_once(hub):
    results: dict[int, str] = {}

    def work(i: int) -> None:
        results[i] = hub.call("alpha__add" if i % 2 else "web__add", {"a": i, "b": 0.5}).text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: f"{i + 0.5}" for i in range(8)}


def test_tool_errors_are_results(hub):
    missing = hub.call("alpha__read_file", {"name": "nope.txt"})
    assert missing.is_error and "nope.txt: no such file" in missing.text
    invalid = hub.call("alpha__add", {"a": "x"})
    assert invalid.is_error and "a" in invalid.text and "b" in invalid.text
    unknown = hub.call("add", {"a": 1, "b": 2})  # ambiguous: two servers have `add`
    assert unknown.is_error and "no tool called 'add'" in unknown.text and "alpha__add" in unknown.text


def test_long_results_are_cut_with_a_note(hub):
    result = hub.call("web__big", {"n": 5000})
    assert not result.is_error and result.cut_chars == 4000
    assert result.text.startswith("abcdefghij") and len(result.text) < 1200
    assert result.text.endswith("[Cut: 4,000 more characters not shown; the tool returned 5,000 characters.]")
    assert hub.call("web__big", {"n": 1000}).cut_chars == 0


@pytest.mark.parametrize("server", ["alpha", "web"])
def test_timeout_gives_an_error_result_and_cancels_on_the_server(hub, http_server, server):
    root = hub.root if server == "alpha" else http_server[1]
    for marker in ("slow-started", "slow-cancelled", "slow-finished"):
        (root / marker).unlink(missing_ok=True)
    result = hub.call(f"{server}__slow", {"seconds": 60}, timeout=1.0)
    assert result.is_error and result.timed_out and not result.cancelled
    assert "did not finish within 1 s" in result.text
    wait_for(lambda: (root / "slow-cancelled").exists(), "the server to see the cancellation")
    assert not (root / "slow-finished").exists()
    assert hub.call(f"{server}__add", {"a": 1, "b": 1}).text == "2.0"  # the connection is fine afterwards


@pytest.mark.parametrize("server", ["alpha", "web"])
def test_cancel_from_another_thread_reaches_the_server(hub, http_server, server):
    root = hub.root if server == "alpha" else http_server[1]
    for marker in ("slow-started", "slow-cancelled", "slow-finished"):
        (root / marker).unlink(missing_ok=True)
    call = hub.start_call(f"{server}__slow", {"seconds": 60})
    wait_for(lambda: (root / "slow-started").exists(), "the tool to start")
    assert not call.done()
    done = threading.Event()
    call.add_done_callback(lambda _c: done.set())
    canceller = threading.Thread(target=call.cancel)
    canceller.start()
    canceller.join()
    result = call.result(timeout=30)
    assert result.cancelled and result.is_error and (result.name, result.server) == (f"{server}__slow", server)
    assert done.wait(30)
    wait_for(lambda: (root / "slow-cancelled").exists(), "the server to see the cancellation")
    assert not (root / "slow-finished").exists()


def test_switched_off_tools_are_listed_but_not_called(hub):
    hub.state.set_tool_enabled("alpha", "echo", False)
    hub.state.set_always_allow("alpha", "add", True)
    try:
        tools = {t.name: t for t in hub.list_tools()}
        assert not tools["alpha__echo"].enabled and tools["web__echo"].enabled
        assert tools["alpha__add"].always_allow
        assert "alpha__echo" not in {t.name for t in hub.enabled_tools()}
        result = hub.call("alpha__echo", {"text": "hi"})
        assert result.is_error and "turned off" in result.text
    finally:
        hub.state.set_tool_enabled("alpha", "echo", True)
        hub.state.set_always_allow("alpha", "add", False)


def test_unique_names_stay_plain_and_qualified_names_always_work(tmp_path):
    config = parse_config({"mcpServers": {"my server": stdio_spec(tmp_path, "solo")}})
    with ToolHub(config) as hub:
        assert [t.name for t in hub.list_tools()] == TOOLS
        assert hub.call("add", {"a": 1, "b": 2}).text == "3.0"
        assert hub.call("my_server__add", {"a": 1, "b": 2}).text == "3.0"
        assert hub.find_tool("my_server__add") == hub.find_tool("add") and hub.find_tool("add").server == "my server"
        assert hub.find_tool("nope") is None


@pytest.mark.slow  # waits out MCP servers' shutdown: ~10 s
def test_close_stops_every_server_and_the_thread(tmp_path):
    hang = tmp_path / "hang.pid"
    config = parse_config(
        {
            "mcpServers": {
                "one": stdio_spec(tmp_path, "one"),
                # a process that never answers: the start times out, and close() must still leave nothing behind
                "mute": {
                    "command": sys.executable,
                    "args": [
                        "-c",
                        "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
                        "print('starting…', file=sys.stderr, flush=True); time.sleep(120)",
                        str(hang),
                    ],
                },
            }
        }
    )
    hub = ToolHub(config, start_timeout=8.0)  # long enough for a real server to start on a busy machine
    call = hub.start_call("slow", {"seconds": 60})
    wait_for(lambda: (tmp_path / "slow-started").exists(), "the tool to start")
    assert "did not answer within 8 s" in hub.server_errors()["mute"]
    assert "starting…" in hub.server_errors()["mute"]
    pids = [int((tmp_path / "pid-one").read_text()), int(hang.read_text())]
    thread = hub._thread
    hub.close()
    assert call.result(timeout=1).cancelled  # a call in flight ends as cancelled
    for pid in pids:
        wait_for(lambda pid=pid: pid_gone(pid), f"process {pid} to end")
    assert not thread.is_alive()
    hub.close()  # again: nothing to do
    with pytest.raises(RuntimeError, match="closed"):
        hub.call("add", {"a": 1, "b": 2})


def test_a_server_that_dies_is_started_again(tmp_path):
    config = parse_config({"mcpServers": {"one": stdio_spec(tmp_path, "one")}})
    with ToolHub(config) as hub:
        assert hub.call("add", {"a": 1, "b": 1}).text == "2.0"
        first = int((tmp_path / "pid-one").read_text())
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: pid_gone(first), "the server to die")
        lost = hub.call("add", {"a": 1, "b": 1})
        assert lost.is_error and "closed the connection" in lost.text
        assert hub.call("add", {"a": 2, "b": 2}).text == "4.0"
        assert int((tmp_path / "pid-one").read_text()) != first


def test_missing_command_and_folder_are_named(tmp_path):
    config = parse_config(
        {
            "mcpServers": {
                "ghost": {"command": "olmo-no-such-command"},
                "nowhere": {"command": sys.executable, "cwd": str(tmp_path / "missing")},
                "refused": {"url": "http://127.0.0.1:9/mcp"},
            }
        }
    )
    with ToolHub(config) as hub:
        assert hub.list_tools() == []
        errors = hub.server_errors()
    assert "command not found: olmo-no-such-command" in errors["ghost"]
    assert f"the folder {tmp_path / 'missing'} does not exist" in errors["nowhere"]
    assert errors["refused"].startswith("MCP server 'refused' could not start:")
