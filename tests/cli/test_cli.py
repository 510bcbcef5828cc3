"""The olmo3 command line: info, generate, chat (scripted, JSON), quantize, and its error messages."""

from __future__ import annotations

import json
import subprocess
import sys

from olmo3.cli import main


def test_info_lists_layers_window_and_kv_bytes(tiny_model_dir, capsys):
    assert main(["info", "--model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "4: 1 full, 3 sliding" in out and "sssF" in out and "16 tokens" in out
    assert "KV per token, full layers" in out and "parameters" in out
    assert main(["info", "--model", str(tiny_model_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sliding_window"] == 16


def test_generate_streams_and_reports_speed(tiny_model_dir, capsys):
    assert (
        main(
            [
                "generate",
                "--model",
                str(tiny_model_dir),
                "--prompt",
                "hi",
                "--max-tokens",
                "6",
                "--temp",
                "0",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "TTFT" in err and "tok/s" in err and "6 generated" in err


def test_chat_script_json_lines(tiny_model_dir, tmp_path, capsys):
    script = tmp_path / "s.json"
    script.write_text(
        json.dumps([{"send": "hello"}, {"send": "more"}, {"regenerate": True}, {"edit": 0, "text": "changed"}])
    )
    rc = main(
        [
            "chat",
            "--model",
            str(tiny_model_dir),
            "--script",
            str(script),
            "--json",
            "--max-tokens",
            "5",
            "--temp",
            "0",
            "--cache-dir",
            str(tmp_path / "kv"),
        ]
    )
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4
    assert lines[1]["stats"]["cached_tokens"] > 0
    assert lines[2]["stats"]["reconcile"] == "snapshot"
    assert lines[1]["tokens"][: len(lines[0]["tokens"])] == lines[0]["tokens"]
    assert lines[2]["reply_tokens"] == lines[1]["reply_tokens"]  # greedy regenerate: same reply


def test_bad_script_and_bad_model_fail_clearly(tiny_model_dir, tmp_path, capsys):
    script = tmp_path / "s.json"
    script.write_text("{}")
    assert main(["chat", "--model", str(tiny_model_dir), "--script", str(script), "--json"]) == 2
    assert "expected a JSON list" in capsys.readouterr().err
    assert main(["info", "--model", str(tmp_path)]) == 2
    assert "config.json is missing" in capsys.readouterr().err


def test_console_script_entry_point_runs(tiny_model_dir):
    out = subprocess.run(
        [sys.executable, "-m", "olmo3.cli", "info", "--model", str(tiny_model_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "sliding window" in out.stdout
