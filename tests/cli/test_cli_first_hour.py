"""The ``olmo3`` console script as a newcomer meets it, in real processes: ``tiny``, ``--model NAME``,
``--memory-limit``, a 4,096-context model answering "Hello", ``chat``'s commands, ``info`` and the help texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

OLMO3 = str(Path(sys.executable).with_name("olmo3"))


@pytest.fixture
def env(tmp_path):
    """A home of its own: an empty models folder and Hugging Face cache, no network."""
    e = dict(os.environ)
    e.update(
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        HF_HUB_CACHE=str(tmp_path / "hf"),
        HF_HUB_OFFLINE="1",
    )
    return e


def olmo3(
    *args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    return subprocess.run([OLMO3, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny4k(tmp_path_factory) -> Path:
    """Made by ``olmo3 tiny`` itself."""
    dest = tmp_path_factory.mktemp("tiny") / "Olmo-3-Tiny"  # seed 0 weights: seed 2 replies in ~60 tokens
    out = subprocess.run([OLMO3, "tiny", str(dest), "--context", "4096"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "4,096-token context" in out.stdout
    return dest


def test_tiny_makes_a_model_and_refuses_to_overwrite(tiny4k, tmp_path, env):
    assert (tiny4k / "config.json").is_file() and (tiny4k / "model.safetensors").is_file()
    assert json.loads((tiny4k / "config.json").read_text())["max_position_embeddings"] == 4096
    again = olmo3("tiny", str(tiny4k), env=env)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "not an empty folder" in again.stderr
    think = olmo3("tiny", str(tmp_path / "think"), "--think", "--context", "2048", env=env)
    assert think.returncode == 0, think.stderr
    assert (tmp_path / "think" / "chat_template.jinja").read_text().count("<think>") >= 1


def test_info_names_the_full_attention_layers(tiny4k, env):
    out = olmo3("info", "--model", str(tiny4k), env=env)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("full-attention layers"))
    assert line.split()[-4:] == ["3", "(counted", "from", "0)"]


def test_generate_with_default_settings_answers_hello(tiny4k, env):
    out = olmo3("generate", "--model", str(tiny4k), "--prompt", "Hello", "--seed", "2", env=env)
    assert out.returncode == 0, out.stderr
    assert "generated" in out.stderr and "doesn't fit" not in out.stderr


def test_memory_limit_refuses_with_one_line_and_exit_2(tiny4k, env):
    for command in (
        ["generate", "--model", str(tiny4k), "--prompt", "Hello"],
        ["chat", "--model", str(tiny4k), "--script", os.devnull],
        ["bench", "decode", "--model", str(tiny4k), "--rounds", "1", "--tokens", "4"],
    ):
        out = olmo3(*command, "--memory-limit", "100M", env=env)
        assert out.returncode == 2, (command, out.stderr)
        assert out.stderr.count("\n") == 1, out.stderr  # one line, no traceback
        assert out.stderr.startswith("olmo3: Won't fit: needs about")
        assert "but only 105 MB (your memory limit) is available" in out.stderr and "tokens + " in out.stderr
        assert out.stdout == ""
    # Over the limit but loaded anyway; a bad size.
    forced = olmo3("generate", "--model", str(tiny4k), "--prompt", "Hi", "--max-tokens", "3", "--memory-limit",
                   "100M", "--load-anyway", env=env)  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    bad = olmo3("generate", "--model", str(tiny4k), "--prompt", "Hi", "--memory-limit", "lots", env=env)
    assert bad.returncode == 2 and "'lots' is not a size" in bad.stderr


def test_model_accepts_a_name_from_models_list(tiny4k, env):
    imported = olmo3("models", "import", str(tiny4k), "--link", env=env)
    assert imported.returncode == 0, imported.stderr
    listed = olmo3("models", "list", "--json", env=env)
    name = json.loads(listed.stdout)[0]["name"]
    assert name == "local/Olmo-3-Tiny"
    out = olmo3("generate", "--model", name, "--prompt", "Hi", "--max-tokens", "3", env=env)
    assert out.returncode == 0, out.stderr
    assert olmo3("info", "--model", name, env=env).returncode == 0
    missing = olmo3("generate", "--model", "local/nothing-here", "--prompt", "Hi", env=env)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "no such folder or installed model; see `olmo3 models list`" in missing.stderr


def test_chat_commands(tiny4k, env):
    session = "Hello\n/frobnicate\n/edit 7\n/edit\n/stats\n/quit\n"
    out = olmo3("chat", "--model", str(tiny4k), "--seed", "1", "--max-tokens", "8", env=env, stdin=session)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    assert "unknown command /frobnicate" in out.stdout and "/regen" in out.stdout  # the list, not sent to the model
    usage = [x for x in out.stdout.splitlines() if "usage: /edit N" in x]
    assert len(usage) == 2 and all("0 to 0" in x for x in usage)  # one line each
    assert "context used" in out.stdout and "of 4,096 tokens" in out.stdout  # /stats: a readable table
    assert "tokens generated" in out.stdout and "{" not in out.stdout.split("/help")[-1]


def test_chat_script_answers_hello_with_default_settings(tiny4k, tmp_path, env):
    script = tmp_path / "hello.json"
    script.write_text(json.dumps([{"send": "Hello"}]))
    out = olmo3("chat", "--model", str(tiny4k), "--script", str(script), "--json", "--seed", "2", env=env)
    assert out.returncode == 0, out.stderr
    (turn,) = [json.loads(x) for x in out.stdout.splitlines()]
    assert "error" not in turn and turn["stats"]["context_limit"] == 4096 and turn["stats"]["generated_tokens"] >= 1


def test_every_option_has_help(env):
    from olmo3.cli.main import build_parser

    parser = build_parser()
    missing = []

    def walk(p, path):
        for action in p._actions:
            if action.dest in ("help",):
                continue
            if hasattr(action, "choices") and isinstance(action.choices, dict):  # subcommands
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
                continue
            if not action.help:
                missing.append(" ".join([*path, action.option_strings[0] if action.option_strings else action.dest]))

    walk(parser, ["olmo3"])
    assert missing == []
    out = olmo3("generate", "--help", env=env)
    assert out.returncode == 0 and "--memory-limit BYTES" in out.stdout and "olmo3 models list" in out.stdout


def test_olmo_desktop_takes_a_model_and_a_memory_limit(env):
    desktop = str(Path(sys.executable).with_name("olmo-desktop"))
    helped = subprocess.run([desktop, "--help"], capture_output=True, text=True, timeout=60, env=env)
    assert helped.returncode == 0 and "--model MODEL" in helped.stdout and "--memory-limit BYTES" in helped.stdout
    missing = subprocess.run(
        [desktop, "--model", "local/not-there"], capture_output=True, text=True, timeout=60, env=env
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("olmo-desktop: local/not-there: no such folder or installed model")
