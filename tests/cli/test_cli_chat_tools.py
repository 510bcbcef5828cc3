"""``olmo3 chat --tools``: a real subprocess with the MCP test server, and the terminal's consent question."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from tool_helpers import Script, mcp_config, wait_for

from olmo3.cli.chat import run_chat
from olmo3.cli.main import _sampling_args, build_parser


def write_config(tmp_path):
    root = tmp_path / "server"
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps(mcp_config(root)))
    return path, root


def test_chat_with_tools_as_a_subprocess(tiny, tiny_model_dir, tmp_path):
    config, root = write_config(tmp_path)
    script = tmp_path / "s.json"
    script.write_text(json.dumps([{"send": "What is 2 + 40?"}, {"send": "Thanks."}]))
    args = ["--model", str(tiny_model_dir), "--script", str(script), "--json", "--max-tokens", "6", "--temp", "0"]
    args += ["--cache-dir", str(tmp_path / "kv")]
    out = subprocess.run(
        [sys.executable, "-m", "olmo3.cli", "chat", *args, "--tools", "--config", str(config), "--yes"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 2 and all(line["tool_calls"] == [] for line in lines)  # the random model called nothing
    assert lines[1]["stats"]["cached_tokens"] == len(lines[0]["tokens"])
    # The model was shown the server's tools, by its own template.
    _model, tok = tiny
    prompt = tok.decode(lines[0]["tokens"], skip_special_tokens=False)
    assert "You are provided with function signatures within <functions></functions> XML tags." in prompt
    assert '"name": "add", "description": "Add two numbers."' in prompt
    # The server was started for the turn (its tools were offered) and stopped when the chat ended.
    pid = int((root / "pid-calc").read_text())
    wait_for(lambda: not _alive(pid), "the MCP server to stop with the chat")
    assert (root / "tools-state.json").exists() is False  # nothing was switched: no state written


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_tool_options_need_tools_and_a_bad_config_is_one_line(tiny_model_dir, tmp_path):
    base = [sys.executable, "-m", "olmo3.cli", "chat", "--model", str(tiny_model_dir)]
    out = subprocess.run([*base, "--yes"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == "olmo3: --yes only apply with --tools"
    bad = tmp_path / "mcp.json"
    bad.write_text('{"mcpServers": {"x": {"command": 3}}}')
    out = subprocess.run([*base, "--tools", "--config", str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == f"""olmo3: {bad}: server 'x': "command" must be a non-empty string"""


@pytest.mark.parametrize("answer", ["y", "n", "a"])
def test_the_terminal_asks_before_a_call(tiny, tiny_model_dir, tmp_path, monkeypatch, capsys, answer):
    """The interactive chat, in-process so the tiny model can be made to write a call (forced decoding)."""
    _model, tok = tiny
    config, root = write_config(tmp_path)
    script = Script(tok, "<function_calls>add(a=2, b=40)</function_calls>", "Done.")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"Add 2 and 40.\n{answer}\n/quit\n"))
    argv = ["chat", "--model", str(tiny_model_dir), "--max-tokens", "40", "--temp", "0"]
    args = build_parser().parse_args([*argv, "--tools", "--config", str(config)])
    args.cache_dir = str(tmp_path / "kv")
    assert run_chat(args, _sampling_args(args), engine_options={"logits_processors": [script]}) == 0
    captured = capsys.readouterr()
    assert "Allow add(a=2, b=40) from calc? [y] once, [a] always, [n] no:" in captured.err
    assert "tools on" in captured.out
    if answer == "n":
        assert "✗ add: declined" in captured.out and "→ add" not in captured.out
    else:
        assert "→ add(a=2, b=40) · calc" in captured.out and "← 42.0" in captured.out
    assert "Done." in captured.out and "<function_calls>" not in captured.out
    state = root.parent / "tools-state.json"  # beside the mcp.json in use
    if answer == "a":
        assert json.loads(state.read_text())["servers"]["calc"]["tools"]["add"]["always_allow"] is True
    else:
        assert not state.exists()
