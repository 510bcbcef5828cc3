"""``olmo3 models ...`` against the local Hub server: in-process for the commands, real processes for Ctrl-C and a
killed download that the next run resumes."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hub_server import FakeHub, Hold

from olmo3.cli.models import add_models_parser, run_models

REPO = "mlx-community/Olmo-3-Tiny-Instruct"
REPO_4BIT = "mlx-community/Olmo-3-7B-Instruct-4bit"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from olmo3.model.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("src") / "Olmo-3-Tiny-Instruct", seed=4)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="olmo3")
    add_models_parser(parser.add_subparsers(dest="command", required=True))
    code = run_models(parser.parse_args(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_download_list_delete(tmp_path, hub, tiny, capsys):
    hub.add_folder(REPO, tiny)
    d = ["models", "--models-dir", str(tmp_path / "models")]

    code, out, err = run([*d, "download", f"https://huggingface.co/{REPO}"], capsys)
    assert code == 0, err
    assert "Installed: mlx-community/Olmo-3-Tiny-Instruct" in out
    assert "\r[" in err and "100.0%" in err and "Verifying" in err

    code, out, _ = run([*d, "list"], capsys)
    assert code == 0 and REPO in out and "installed" in out and "download" in out
    code, out, _ = run(["models", "list", "--json", "--models-dir", str(tmp_path / "models")], capsys)
    [entry] = json.loads(out)
    assert entry["name"] == REPO and entry["status"] == "installed" and entry["param_count"] > 0
    assert entry["folder"] == str(tmp_path / "models" / REPO)

    # Conversation caches: the one made with this model goes, the other model's stays.
    fingerprint = (
        entry and json.loads((tmp_path / "models" / REPO / ".olmo-desktop.json").read_text())["info"]["fingerprint"]
    )
    caches = tmp_path / "kv"
    caches.mkdir()
    _write_cache(caches / "conv-a.safetensors", fingerprint)
    _write_cache(caches / "conv-b.safetensors", "0123456789abcdef")
    cache_bytes = (caches / "conv-a.safetensors").stat().st_size
    model_bytes = sum(p.stat().st_size for p in (tmp_path / "models" / REPO).rglob("*") if p.is_file())

    code, out, err = run([*d, "delete", REPO, "--yes", "--cache-dir", str(caches)], capsys)
    assert code == 0, err
    from olmo3.units import format_bytes

    assert f"{format_bytes(model_bytes + cache_bytes)} freed" in out
    assert not (caches / "conv-a.safetensors").exists() and (caches / "conv-b.safetensors").exists()
    code, out, _ = run([*d, "list"], capsys)
    assert "No models yet" in out

    code, _, err = run([*d, "delete", REPO, "--yes"], capsys)
    assert code == 2 and "no model named" in err  # refused input


def _write_cache(path: Path, fingerprint: str) -> None:
    import mlx.core as mx

    mx.save_safetensors(
        str(path), {"k": mx.zeros((4, 4))}, metadata={"format": "olmo-desktop-kv-1", "model_fingerprint": fingerprint}
    )


def test_failures_and_exit_codes(tmp_path, hub, tiny, capsys):
    d = ["models", "--models-dir", str(tmp_path / "models")]
    code, _, err = run([*d, "download", "nobody/nothing"], capsys)
    assert code == 1 and "not_found" in err and "nobody/nothing" in err

    code, _, err = run([*d, "download", "../../etc/passwd"], capsys)
    assert code == 2 and "'..' is not allowed" in err

    hub.add_folder(REPO, tiny)
    hub.log.clear()
    code, _, err = run([*d, "--offline", "download", REPO], capsys)
    assert code == 1 and "offline" in err
    assert hub.requests() == []


def test_import_link_and_catalog(tmp_path, hub, tiny, capsys):
    d = ["models", "--models-dir", str(tmp_path / "models")]
    code, out, err = run([*d, "import", str(tiny), "--link", "--name", "local/tiny"], capsys)
    assert code == 0, err
    assert "Linked local/tiny" in out
    code, out, _ = run([*d, "list", "--json"], capsys)
    [m] = json.loads(out)
    assert m["name"] == "local/tiny" and m["source"] == "link" and m["origin"] == str(tiny.resolve())
    code, _, err = run([*d, "import", str(tmp_path)], capsys)
    assert code == 2 and "not a loadable Olmo-3 model" in err  # refused input

    code, out, _ = run([*d, "catalog", "--memory-gb", "16"], capsys)
    assert code == 0
    assert "mlx-community/Olmo-3-7B-Instruct-4bit" in out and "fits" in out and "won't fit" in out
    code, out, _ = run([*d, "catalog", "--json", "--memory-gb", "64", "--context", "32768"], capsys)
    items = {i["repo_id"]: i for i in json.loads(out)}
    assert items["mlx-community/Olmo-3-7B-Instruct-4bit"]["fit"] == "fits"
    assert items["lmstudio-community/Olmo-3.1-32B-Instruct-MLX-8bit"]["fit"] in ("fits", "tight")
    assert items["mlx-community/Olmo-3-7B-Think-bfloat16"]["evidence"] and "known" not in items[REPO_4BIT]
    ai2 = items["allenai/Olmo-3-7B-Think"]
    assert ai2["quantize_bits"] == 4 and ai2["disk_bytes_needed"] == ai2["download_bytes"] + ai2["installed_bytes"]
    assert not any(i["installed"] or i["folder"] for i in items.values())


# -- real processes: Ctrl-C pauses, a killed download resumes on the next run ----------------------------------


class _Proc:
    """``python -m olmo3.cli models ...`` with its stderr collected as it arrives (the bar has no newlines)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.p = subprocess.Popen(
            [sys.executable, "-m", "olmo3.cli", "models", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.err = b""
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self) -> None:
        while chunk := os.read(self.p.stderr.fileno(), 4096):
            self.err += chunk

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.err:
            assert self.p.poll() is None or text.encode() in self.err, self.err.decode(errors="replace")
            assert time.monotonic() < deadline, f"no {text!r} in {self.err!r}"
            time.sleep(0.02)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        out = self.p.stdout.read()  # not communicate(): it would also read stderr, which _pump owns
        self.p.wait(timeout)
        self._t.join(5)
        return self.p.returncode, out.decode(), self.err.decode(errors="replace")


def _wait_size(path: Path, size: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= size):
        assert time.monotonic() < deadline, f"{path} never reached {size} bytes"
        time.sleep(0.02)


def test_ctrl_c_pauses_and_a_killed_download_resumes(tmp_path, hub):
    from olmo3.model.tiny import make_tiny_model

    big = make_tiny_model(tmp_path / "src" / "Olmo-3-Tiny-Instruct", hidden_size=256, intermediate_size=1024, seed=5)
    repo = hub.add_folder(REPO, big)
    weights = repo.files["model.safetensors"]
    mib = 1024 * 1024  # the CLI downloads in 1 MiB chunks
    assert len(weights) > 12 * mib
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_TOKEN", None)
    args = ["--models-dir", str(tmp_path / "models"), "download", REPO]
    part = tmp_path / "models" / REPO / ".download" / "model.safetensors.part"

    # 1. Ctrl-C while the transfer is in flight: pauses, exit 130, the partial file ends on a whole chunk.
    hold = repo.hold["model.safetensors"] = Hold(offset=5 * mib)
    proc = _Proc(args, env)
    assert hold.reached.wait(60)
    _wait_size(part, 5 * mib)
    proc.p.send_signal(signal.SIGINT)
    proc.wait_for("Pausing")
    hold.release.set()
    code, _, err = proc.finish()
    assert code == 130, err
    assert "Paused at" in err and "again to resume" in err
    assert part.stat().st_size == 5 * mib

    # 2. The next run resumes from there; this time the process is killed outright (the app crashing).
    hold = repo.hold["model.safetensors"] = Hold(offset=10 * mib)
    proc = _Proc(args, env)
    assert hold.reached.wait(60)
    _wait_size(part, 10 * mib)
    proc.p.kill()
    proc.finish()
    hold.release.set()
    ranges = [r["range"] for r in hub.requests("GET", "model.safetensors")]
    assert ranges == [None, f"bytes={5 * mib}-"]

    # 3. And the run after that finishes from the killed run's partial file.
    del repo.hold["model.safetensors"]
    code, out, err = _Proc(args, env).finish()
    assert code == 0, err
    assert "resuming at" in err and "Installed: " + REPO in out
    assert [r["range"] for r in hub.requests("GET", "model.safetensors")][-1] == f"bytes={10 * mib}-"
    assert (tmp_path / "models" / REPO / "model.safetensors").read_bytes() == weights
    assert not part.exists()
