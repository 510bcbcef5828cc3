"""`olmo3 generate --json` and `olmo3 chat --script --json` on a Think model, run as the real console script:
thinking budget, reasoning/answer token counts, provenance, /reproduce and 8-bit KV."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path


def olmo3(*args: str) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).with_name("olmo3")
    script = str(beside) if beside.exists() else shutil.which("olmo3")
    assert script, "the olmo3 console script is not installed (pip install -e .)"
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=300)


def test_generate_json_reports_reasoning_answer_and_provenance(tiny_think_dir):
    out = olmo3(
        "generate", "--model", str(tiny_think_dir), "--prompt", "What is 4*3?", "--json",
        "--thinking-budget", "8", "--max-tokens", "5", "--temp", "0.7", "--kv-bits", "8",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    turn = json.loads(lines[0])
    stats, prov = turn["stats"], turn["provenance"]
    assert stats["thinking_budget"] == 8 and stats["reasoning_tokens"] <= 8
    assert stats["reasoning_tokens"] + stats["answer_tokens"] == stats["generated_tokens"] == len(turn["reply_tokens"])
    assert isinstance(turn["text"], str) and isinstance(turn["reasoning"], str)
    assert prov["seed_was_random"] and prov["seed"] == stats["seed"] == prov["sampling"]["seed"]
    assert prov["sampling"] == {
        "temperature": 0.7, "top_p": 0.95, "top_k": 50, "min_p": 0.0, "repetition_penalty": 1.0,
        "max_tokens": 5, "seed": prov["seed"], "thinking_budget": 8, "keep_reasoning": True,
    }  # fmt: skip
    assert prov["thinking_budget"] == 8 and prov["model_name"] == Path(tiny_think_dir).name
    assert prov["model_fingerprint"] and prov["template_hash"] and prov["engine_version"]
    assert prov["context_limit"] > 0 and prov["reconcile"] == "fresh"
    assert prov["kv_bits"] is None  # the tiny model's head_dim (16) is too small to quantize: said so, not claimed

    # The recorded seed reproduces the reply token for token.
    again = olmo3(
        "generate", "--model", str(tiny_think_dir), "--prompt", "What is 4*3?", "--json",
        "--thinking-budget", "8", "--max-tokens", "5", "--temp", "0.7", "--seed", str(prov["seed"]),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    redo = json.loads(again.stdout)
    assert redo["reply_tokens"] == turn["reply_tokens"] and not redo["provenance"]["seed_was_random"]


def test_chat_script_reproduce_and_kv_bits(tmp_path):
    from olmo3.model.tiny import make_tiny_model

    # head_dim 32: the full-attention layers quantize to 8 bits.
    folder = make_tiny_model(tmp_path / "think", think=True, num_attention_heads=2, num_key_value_heads=1)
    script = tmp_path / "s.json"
    script.write_text(json.dumps([{"send": "hello"}, {"send": "more please"}, {"reproduce": True}]))
    out = olmo3(
        "chat", "--model", str(folder), "--script", str(script), "--json", "--max-tokens", "6",
        "--thinking-budget", "6", "--temp", "1.0", "--kv-bits", "8", "--cache-dir", str(tmp_path / "kv"),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    first, second, third = (json.loads(x) for x in out.stdout.splitlines())
    for turn in (first, second, third):
        assert turn["provenance"]["kv_bits"] == 8 and turn["stats"]["reasoning_tokens"] <= 6
        assert {"reasoning_tokens", "answer_tokens", "reasoning_dropped_tokens"} <= set(turn["stats"])
    assert second["stats"]["cached_tokens"] > 0
    assert second["provenance"]["seed_was_random"] and not third["provenance"]["seed_was_random"]
    assert third["action"] == {"reproduce": True} and third["provenance"]["seed"] == second["provenance"]["seed"]
    assert third["reply_tokens"] == second["reply_tokens"] and third["text"] == second["text"]
    assert third["stats"]["reconcile"] == "snapshot"


def test_bad_budget_and_nothing_to_reproduce_fail_clearly(tiny_think_dir, tmp_path):
    out = olmo3("generate", "--model", str(tiny_think_dir), "--prompt", "x", "--thinking-budget", "lots")
    assert out.returncode == 2 and "thinking budget 'lots'" in out.stderr and "Traceback" not in out.stderr
    script = tmp_path / "s.json"
    script.write_text(json.dumps([{"reproduce": True}]))
    out = olmo3("chat", "--model", str(tiny_think_dir), "--script", str(script), "--json")
    assert out.returncode == 2 and "no reply to reproduce yet" in out.stderr and "Traceback" not in out.stderr
