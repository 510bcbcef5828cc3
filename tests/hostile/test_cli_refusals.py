"""Every ``olmo3`` subcommand refuses bad input in one line on stderr with exit 2, never a traceback; ``olmo3
--debug ...`` shows the traceback. A table of refused inputs per subcommand, run as real processes (a few at a
time: each case is its own process, and the ones that load a model import MLX)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # dozens of CLI subprocesses: about 30 s (.ci/run runs them)

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
OLMO3 = [str(BIN / "olmo3")] if (BIN / "olmo3").exists() else [sys.executable, "-m", "olmo3.cli"]

# (case, argv with {placeholders}) — every one must exit 2 with exactly one line on stderr.
CASES: list[tuple[str, list[str]]] = [
    ("no subcommand", []),
    ("unknown subcommand", ["nope"]),
    ("unknown flag", ["info", "--model", "{model}", "--colour"]),
    # info
    ("info: missing --model", ["info"]),
    ("info: missing folder", ["info", "--model", "{tmp}/missing"]),
    ("info: a file, not a folder", ["info", "--model", "{file}"]),
    ("info: an empty folder", ["info", "--model", "{empty}"]),
    ("info: broken config.json", ["info", "--model", "{broken_config}"]),
    ("info: config nested 100,000 deep", ["info", "--model", "{deep_config}"]),
    ("info: truncated weights", ["info", "--model", "{truncated}"]),
    ("info: no tokenizer", ["info", "--model", "{no_tokenizer}"]),
    # generate
    ("generate: missing folder", ["generate", "--model", "{tmp}/missing", "--prompt", "hi"]),
    ("generate: not a model", ["generate", "--model", "{empty}", "--prompt", "hi"]),
    ("generate: template syntax error", ["generate", "--model", "{bad_syntax}", "--prompt", "hi", "--max-tokens", "4"]),
    ("generate: template raises", ["generate", "--model", "{raises}", "--prompt", "hi", "--max-tokens", "4"]),
    ("generate: template reads a missing key", ["generate", "--model", "{undefined}", "--prompt", "hi"]),
    ("generate: --max-tokens 0", ["generate", "--model", "{model}", "--prompt", "hi", "--max-tokens", "0"]),
    ("generate: --max-tokens abc", ["generate", "--model", "{model}", "--prompt", "hi", "--max-tokens", "abc"]),
    ("generate: --temp nan", ["generate", "--model", "{model}", "--prompt", "hi", "--temp", "nan"]),
    ("generate: --temp -1", ["generate", "--model", "{model}", "--prompt", "hi", "--temp", "-1"]),
    ("generate: --top-p 2", ["generate", "--model", "{model}", "--prompt", "hi", "--top-p", "2"]),
    ("generate: --seed -1", ["generate", "--model", "{model}", "--prompt", "hi", "--seed", "-1"]),
    ("generate: missing --prompt", ["generate", "--model", "{model}"]),
    # chat
    ("chat: missing folder", ["chat", "--model", "{tmp}/missing", "--script", "{script}"]),
    ("chat: not a model", ["chat", "--model", "{empty}", "--script", "{script}"]),
    ("chat: script not JSON", ["chat", "--model", "{model}", "--script", "{bad_script}"]),
    ("chat: script nested deep", ["chat", "--model", "{model}", "--script", "{deep_script}"]),
    ("chat: script missing", ["chat", "--model", "{model}", "--script", "{tmp}/missing.json"]),
    ("chat: script of wrong actions", ["chat", "--model", "{model}", "--script", "{wrong_script}"]),
    ("chat: --top-k -5", ["chat", "--model", "{model}", "--script", "{script}", "--top-k", "-5"]),
    # quantize
    ("quantize: missing source", ["quantize", "{tmp}/missing", "{tmp}/q"]),
    ("quantize: not a model", ["quantize", "{empty}", "{tmp}/q"]),
    ("quantize: destination not empty", ["quantize", "{model}", "{nonempty}"]),
    ("quantize: --bits 3", ["quantize", "{model}", "{tmp}/q", "--bits", "3"]),
    ("quantize: --group-size 0", ["quantize", "{model}", "{tmp}/q", "--group-size", "0"]),
    ("quantize: --group-size 7", ["quantize", "{model}", "{tmp}/q", "--group-size", "7"]),
    # bench
    ("bench: unknown benchmark", ["bench", "nope"]),
    ("bench: missing model", ["bench", "decode", "--model", "{tmp}/missing"]),
    ("bench: --rounds 0", ["bench", "decode", "--model", "{model}", "--rounds", "0"]),
    ("bench: --tokens -5", ["bench", "decode", "--model", "{model}", "--tokens", "-5"]),
    # models
    ("models: no action", ["models"]),
    ("models download: invalid repo id", ["models", "--models-dir", "{tmp}/m", "download", "not a repo!"]),
    ("models download: path traversal", ["models", "--models-dir", "{tmp}/m", "download", "../../etc/passwd"]),
    ("models import: missing folder", ["models", "--models-dir", "{tmp}/m", "import", "{tmp}/missing"]),
    ("models import: not a model", ["models", "--models-dir", "{tmp}/m", "import", "{empty}"]),
    ("models import: truncated weights", ["models", "--models-dir", "{tmp}/m", "import", "{truncated}"]),
    ("models catalog: --memory-gb abc", ["models", "catalog", "--memory-gb", "abc"]),
    # tools
    ("tools: no action", ["tools"]),
    ("tools list: missing config", ["tools", "list", "--config", "{tmp}/missing.json"]),
    ("tools list: config not JSON", ["tools", "list", "--config", "{bad_script}"]),
    ("tools list: config nested deep", ["tools", "list", "--config", "{deep_script}"]),
    ("tools call: arguments not JSON", ["tools", "call", "x", "{{nope", "--config", "{mcp}"]),
    ("tools call: arguments a list", ["tools", "call", "x", "[1]", "--config", "{mcp}"]),
    ("tools call: arguments nested deep", ["tools", "call", "x", "{deep_args}", "--config", "{mcp}"]),
    ("tools call: --timeout -1", ["tools", "call", "x", "{{}}", "--config", "{mcp}", "--timeout", "-1"]),
    ("tools call: no such tool", ["tools", "call", "nope", "{{}}", "--config", "{mcp}"]),
    # tiny
    ("tiny: destination not empty", ["tiny", "{nonempty}"]),
    ("tiny: destination a file", ["tiny", "{file}"]),
    ("tiny: --context 0", ["tiny", "{tmp}/tiny-zero", "--context", "0"]),
    ("tiny: --context abc", ["tiny", "{tmp}/tiny-abc", "--context", "abc"]),
    # memory and context options of commands that load a model
    ("generate: --memory-limit lots", ["generate", "--model", "{model}", "--prompt", "hi", "--memory-limit", "lots"]),
    ("generate: --context 0", ["generate", "--model", "{model}", "--prompt", "hi", "--context", "0"]),
    (
        "generate: --thinking-budget lots",
        ["generate", "--model", "{model}", "--prompt", "hi", "--thinking-budget", "x"],
    ),
    ("info: no such installed model", ["info", "--model", "nobody/nothing"]),
    ("bench docs: --pages 0", ["bench", "docs", "--pages", "0"]),
    # store
    ("store: no action", ["store"]),
    ("store check: missing file", ["store", "check", "--db", "{tmp}/missing.sqlite3"]),
    ("store check: not SQLite", ["store", "check", "--db", "{file}"]),
    ("store check: another program's SQLite", ["store", "check", "--db", "{foreign_db}"]),
    ("store recover: destination exists", ["store", "recover", "{file}", "--db", "{foreign_db}"]),
    ("store recover: not SQLite", ["store", "recover", "{tmp}/out.sqlite3", "--db", "{file}"]),
]
DEBUG_CASES = ["info: missing folder", "generate: template raises", "store check: not SQLite", "chat: script not JSON"]


def _model_variants(base: Path, tmp: Path) -> dict[str, str]:
    def variant(name: str) -> Path:
        folder = tmp / name
        shutil.copytree(base, folder)
        return folder

    v: dict[str, Path] = {"model": base}
    v["broken_config"] = variant("broken_config")
    (v["broken_config"] / "config.json").write_text("{not json")
    v["deep_config"] = variant("deep_config")
    (v["deep_config"] / "config.json").write_text("[" * 100_000)
    v["truncated"] = variant("truncated")
    weights = v["truncated"] / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    v["no_tokenizer"] = variant("no_tokenizer")
    (v["no_tokenizer"] / "tokenizer.json").unlink()
    for name, template in (
        ("bad_syntax", "{% for x in %}"),
        ("raises", "{{ raise_exception('this template refuses') }}"),
        ("undefined", "{{ messages[0].nope.deeper }}"),
    ):
        v[name] = variant(name)
        (v[name] / "chat_template.jinja").write_text(template)
    v["empty"] = tmp / "empty"
    v["empty"].mkdir()
    v["nonempty"] = tmp / "nonempty"
    v["nonempty"].mkdir()
    (v["nonempty"] / "x").write_text("x")
    v["file"] = tmp / "file.txt"
    v["file"].write_text("just text\n")
    v["script"] = tmp / "script.json"
    v["script"].write_text(json.dumps([{"send": "hi"}]))
    v["bad_script"] = tmp / "bad.json"
    v["bad_script"].write_text("[{send: hi}]")
    v["deep_script"] = tmp / "deep.json"
    v["deep_script"].write_text("[" * 100_000)
    v["wrong_script"] = tmp / "wrong.json"
    v["wrong_script"].write_text(json.dumps([{"send": "hi"}, {"edit": "zero"}]))
    v["mcp"] = tmp / "mcp.json"
    v["mcp"].write_text('{"mcpServers": {}}')
    v["foreign_db"] = tmp / "foreign.sqlite3"
    conn = sqlite3.connect(v["foreign_db"])
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    out = {k: str(p) for k, p in v.items()}
    out["tmp"] = str(tmp)
    out["deep_args"] = "[" * 50_000
    return out


def _run(argv: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "OLMO_DESKTOP_HOME": str(tmp / "home"),
        "XDG_CONFIG_HOME": str(tmp / "xdg-config"),
        "XDG_DATA_HOME": str(tmp / "xdg-data"),
        "XDG_CACHE_HOME": str(tmp / "xdg-cache"),
    }
    return subprocess.run([*OLMO3, *argv], capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case of the table, run a few at a time up front; each test below checks one."""
    from olmo3.model.tiny import make_tiny_model

    tmp = tmp_path_factory.mktemp("refusals")
    places = _model_variants(make_tiny_model(tmp / "tiny"), tmp)
    jobs = [(name, [a.format(**places) for a in argv]) for name, argv in CASES]
    jobs += [(f"--debug {name}", ["--debug", *dict(jobs)[name]]) for name in DEBUG_CASES]
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = pool.map(lambda job: (job[0], _run(job[1], tmp)), jobs)
        return dict(done)


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_refused_in_one_line_with_exit_2(results, name: str) -> None:
    r = results[name]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr[-1500:]}"
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert lines[0].startswith("olmo3"), lines[0]
    if name.startswith("tiny: --context"):
        assert not any(Path(a).exists() for a in r.args if "tiny-" in str(a))  # refused before the folder is made


@pytest.mark.parametrize("name", DEBUG_CASES)
def test_debug_shows_the_traceback(results, name: str) -> None:
    r = results[f"--debug {name}"]
    assert r.returncode != 0 and "Traceback (most recent call last)" in r.stderr, r.stderr[-1500:]
