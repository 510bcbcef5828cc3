"""Every command exits 0, every time: the real console scripts as processes, run again and again.

``olmo3 chat --script``, ``olmo3 generate``, ``olmo3 models download`` (from the local Hub server),
``olmo-desktop --self-test``, and the app closed with SIGTERM (it must save, spill its caches and join its
threads, then exit 0). Before the fix in ``olmo3.chat.engine._release_thread_mlx_state`` ``olmo3 chat`` died with
SIGABRT (exit 134, "terminate called without an active exception") in most runs after printing everything.

The fast suite runs each a couple of times; the ``slow`` marker runs each at least ten times. Runs go two or
three at a time (this is about exit codes, not speed).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hub_server import FakeHub

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
REPO = "mlx-community/Olmo-3-Tiny-Instruct"
FAST, SLOW = 2, 10
RUNS = [pytest.param(FAST, id="fast"), pytest.param(SLOW, id="10x", marks=pytest.mark.slow)]
ONCE = [pytest.param(1, id="fast"), pytest.param(SLOW, id="10x", marks=pytest.mark.slow)]


def script(name: str) -> list[str]:
    """The installed console script (what a user runs), else the module."""
    path = BIN / name
    if path.exists():
        return [str(path)]
    module = {"olmo3": "olmo3.cli", "olmo-desktop": "desktop"}[name]
    return [sys.executable, "-m", module]


def env(tmp: Path, **extra: str) -> dict[str, str]:
    e = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "OLMO_DESKTOP_HOME": str(tmp / "home"),
        "XDG_DATA_HOME": str(tmp / "xdg-data"),
        "XDG_CACHE_HOME": str(tmp / "xdg-cache"),
        "XDG_CONFIG_HOME": str(tmp / "xdg-config"),
        **extra,
    }
    e.pop("HF_TOKEN", None)
    return e


def repeat(runs: int, job: Callable[[int], subprocess.CompletedProcess[str]], workers: int = 3) -> None:
    """Run ``job(i)`` ``runs`` times, a few at once; every one must exit 0 without an abort or a traceback."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(job, range(runs)))
    codes = [r.returncode for r in results]
    for r in results:
        assert r.returncode == 0, f"exit codes {codes}; stderr of a failed run:\n{r.stderr[-3000:]}"
        assert "terminate called" not in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]


def run(cmd: Sequence[str], environ: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, env=environ, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from olmo3.model.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "Olmo-3-Tiny-Instruct", seed=3)


@pytest.mark.parametrize("runs", RUNS)
def test_olmo3_chat_script_exits_0(tmp_path: Path, model: Path, runs: int) -> None:
    actions = tmp_path / "script.json"
    actions.write_text(json.dumps([{"send": "hello"}, {"send": "and more"}, {"regenerate": True}]))

    def job(i: int) -> subprocess.CompletedProcess[str]:
        cmd = [*script("olmo3"), "chat", "--model", str(model), "--script", str(actions), "--json"]
        r = run([*cmd, "--max-tokens", "8", "--cache-dir", str(tmp_path / f"kv{i}")], env(tmp_path / f"{i}"))
        if r.returncode == 0:
            lines = [json.loads(line) for line in r.stdout.splitlines()]
            assert len(lines) == 3 and all("text" in line for line in lines), r.stdout
        return r

    repeat(runs, job)


@pytest.mark.parametrize("runs", RUNS)
def test_olmo3_generate_exits_0(tmp_path: Path, model: Path, runs: int) -> None:
    def job(i: int) -> subprocess.CompletedProcess[str]:
        cmd = [*script("olmo3"), "generate", "--model", str(model), "--prompt", "Hi", "--max-tokens", "8"]
        return run(cmd, env(tmp_path / f"{i}"))

    repeat(runs, job)


@pytest.mark.parametrize("runs", RUNS)
def test_olmo3_models_download_exits_0(tmp_path: Path, model: Path, runs: int) -> None:
    with FakeHub() as hub:
        hub.add_folder(REPO, model)

        def job(i: int) -> subprocess.CompletedProcess[str]:
            e = env(tmp_path / f"{i}", HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(tmp_path / f"hf{i}"))
            e.pop("HF_HUB_OFFLINE", None)
            r = run([*script("olmo3"), "models", "--models-dir", str(tmp_path / f"m{i}"), "download", REPO], e)
            if r.returncode == 0:
                assert f"Installed: {REPO}" in r.stdout, r.stdout
            return r

        repeat(runs, job)


@pytest.mark.parametrize("runs", ONCE)
def test_olmo_desktop_self_test_exits_0(tmp_path: Path, runs: int) -> None:
    def job(i: int) -> subprocess.CompletedProcess[str]:
        r = run([*script("olmo-desktop"), "--self-test"], env(tmp_path / f"{i}"))
        if r.returncode == 0:
            assert "self-test passed" in r.stdout + r.stderr
        return r

    repeat(runs, job, workers=2)


def _log(home: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((home / "logs").glob("*.log*")))


def _wait_for_log(home: Path, text: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (home / "logs").exists() or text not in _log(home):
        assert proc.poll() is None, (
            f"the app exited early ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}"
        )
        assert time.monotonic() < deadline, f"no {text!r} in the log"
        time.sleep(0.1)


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The process's first line of output, or "" if none comes in time (never blocks the test forever)."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


def _terminate(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("runs", ONCE)
def test_app_closed_with_sigterm_exits_0(tmp_path: Path, runs: int) -> None:
    def job(i: int) -> subprocess.CompletedProcess[str]:
        home = tmp_path / f"home{i}"
        proc = subprocess.Popen(
            [*script("olmo-desktop"), "--home", str(home)],
            env=env(tmp_path / f"{i}"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for_log(home, "window open", proc)
            result = _terminate(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
        log = _log(home)
        if result.returncode == 0:
            assert "closing on SIGTERM" in log and "shut down cleanly" in log, log[-2000:]
        return result

    repeat(runs, job, workers=2)


@pytest.mark.parametrize("runs", [pytest.param(1, id="fast"), pytest.param(3, id="3x", marks=pytest.mark.slow)])
def test_app_mid_conversation_closed_with_sigterm_saves_and_spills(tmp_path: Path, model: Path, runs: int) -> None:
    """A model loaded and a reply made, then SIGTERM: exit 0, the reply saved, the cache spilled, threads joined."""
    from desktop.paths import AppPaths
    from olmo3.store import ConversationStore

    def job(i: int) -> subprocess.CompletedProcess[str]:
        home = tmp_path / f"home{i}"
        (home / "config").mkdir(parents=True)
        settings = {
            "last_model": str(model),
            "auto_load_last_model": True,
            "sampling_follows_model": False,
            "sampling": {"temperature": 0.0, "max_tokens": 8, "seed": 0},
        }
        (home / "config" / "settings.json").write_text(json.dumps(settings))
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_app_driver.py")), "--home", str(home)],
            env={**env(tmp_path / f"{i}"), "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = _first_line(proc, timeout=180)
            assert line.startswith("READY "), (line, proc.poll())
            conv_id = line.split()[1]
            result = _terminate(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
        if result.returncode != 0:
            return result
        log = _log(home)
        assert "closing on SIGTERM" in log and "shut down cleanly" in log, log[-2000:]
        spilled = AppPaths.under(home).kv_cache_dir / f"{conv_id}.safetensors"
        assert spilled.exists(), sorted(str(p.relative_to(home)) for p in home.rglob("*"))
        with ConversationStore(AppPaths.under(home).database) as store:
            path = store.active_path(conv_id)
            assert [m.role for m in path] == ["user", "assistant"] and path[-1].state == "complete"
        return result

    repeat(runs, job, workers=1)


def test_helpers_find_the_console_scripts() -> None:
    """The tests above run what a user runs: the installed scripts (falling back to ``-m`` elsewhere)."""
    assert shutil.which("olmo3", path=str(BIN)) or script("olmo3")[1] == "-m"
