"""Crash test: SIGKILL a process streaming into the store at random moments (20 trials).

After every kill the database must pass ``PRAGMA integrity_check``, every message the child
finished must be intact, and the message being streamed must hold all text appended more than
``flush_interval`` (1 s) before the child's last logged append. The bound is exact, not a
timing tolerance: the store decides to commit at append time, so if the last append did not
commit, the last commit was decided less than a second before it and covered every delta that
started before that decision (see tests/store/_store_child.py for the log).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from olmo3.store import FLUSH_INTERVAL_S, ConversationStore

CHILD = Path(__file__).with_name("_store_child.py")
TRIALS = 20
EARLY_KILL_EVERY = 5  # every 5th trial is killed at a random moment of start-up instead


def load_child() -> Any:
    spec = importlib.util.spec_from_file_location("_store_child", CHILD)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def read_log(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines only: the kill may cut the last one short."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # the part after the last newline is unfinished
    return [json.loads(line) for line in lines]


def wait_for_begin(log: Path, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r["ev"] == "begin" for r in read_log(log)):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def check_after_kill(
    db: Path, completed: dict[str, dict[str, Any]], log: list[dict[str, Any]], child: Any
) -> dict[str, Any]:
    """All checks on the raw file, before any store opens it; returns measurements."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
        for mid, rec in completed.items():
            row = conn.execute(
                "SELECT content, reasoning, token_ids, stats, state FROM messages WHERE id = ?", (mid,)
            ).fetchone()
            assert row is not None, f"completed message {mid} is missing"
            content, reasoning, token_ids, stats, state = row
            assert (content, reasoning, state) == (rec["content"], rec["reasoning"], "complete")
            assert (json.loads(token_ids) if token_ids else None) == rec["token_ids"]
            assert (json.loads(stats) if stats else None) == rec["stats"]

        begin = next((r for r in log if r["ev"] == "begin"), None)
        if begin is None:
            return {}
        content, reasoning = conn.execute(
            "SELECT content, reasoning FROM messages WHERE id = ?", (begin["id"],)
        ).fetchone()
    finally:
        conn.close()
    sequence = child.deltas(begin["seed"])
    full_answer = "".join(t for c, t in sequence if c == "answer")
    full_reasoning = "".join(t for c, t in sequence if c == "reasoning")
    assert full_answer.startswith(content) and full_reasoning.startswith(reasoning)

    appended = [r for r in log if r["ev"] == "d"]
    if not appended:
        return {"required": 0}
    last_tb = appended[-1]["tb"]
    required = [r["i"] for r in appended if r["tb"] <= last_tb - FLUSH_INTERVAL_S]
    n_required = required[-1] + 1 if required else 0
    need_answer = "".join(t for c, t in sequence[:n_required] if c == "answer")
    need_reasoning = "".join(t for c, t in sequence[:n_required] if c == "reasoning")
    assert reasoning.startswith(need_reasoning), "lost reasoning older than a second"
    assert content.startswith(need_answer), (
        f"lost answer text older than a second: stored {len(content)} chars, needed {len(need_answer)}"
    )
    # How far behind the disk was at the kill: the oldest logged delta not stored.
    stored_n = 0
    total = 0
    for i, (_channel, t) in enumerate(sequence):
        if total + len(t) > len(content) + len(reasoning):
            break
        total += len(t)
        stored_n = i + 1
    unsaved = [r["tb"] for r in appended if r["i"] >= stored_n]
    return {"required": n_required, "lag_s": (last_tb - unsaved[0]) if unsaved else 0.0}


@pytest.mark.slow  # SIGKILL trials over ~20 s of streaming
def test_sigkill_while_streaming_loses_at_most_the_last_second(tmp_path: Path) -> None:
    child = load_child()
    db = tmp_path / "crash.sqlite3"
    rng = random.Random(20251127)
    completed: dict[str, dict[str, Any]] = {}
    measured: list[dict[str, Any]] = []
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    for trial in range(TRIALS):
        log_path = tmp_path / f"trial{trial}.log"
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(db), str(log_path), str(trial)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        try:
            if trial % EARLY_KILL_EVERY == EARLY_KILL_EVERY - 1:
                time.sleep(rng.uniform(0.0, 0.3))  # start-up: opening, recovery, first writes
            else:
                assert wait_for_begin(log_path, proc), proc.stderr.read().decode() if proc.stderr else ""
                time.sleep(rng.uniform(0.0, 2.0))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL, f"child exited by itself: {stderr}"
        log = read_log(log_path)
        measured.append(check_after_kill(db, completed, log, child))
        completed.update({r["id"]: r for r in log if r["ev"] == "complete"})

        # Reopening recovers: the cut stream is 'interrupted', its text unchanged.
        begin = next((r for r in log if r["ev"] == "begin"), None)
        with ConversationStore(db) as store:
            conn = sqlite3.connect(db)
            assert conn.execute("SELECT count(*) FROM messages WHERE state = 'streaming'").fetchone()[0] == 0
            conn.close()
            if begin is not None and begin["id"] not in completed:
                msg = store.get_message(begin["id"])
                assert msg.state == "interrupted"

    # The "one second" check must have had work to do in a good share of the trials.
    assert sum(1 for m in measured if m.get("required", 0) > 0) >= 4, measured
    lags = [m["lag_s"] for m in measured if "lag_s" in m]
    print(f"\ncrash test: {len(lags)} kills mid-stream, max unsaved window {max(lags):.3f} s")
