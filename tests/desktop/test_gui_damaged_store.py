"""The window starts on a damaged conversation database: the file is kept aside unchanged, a new store starts, the
note names the kept file and the salvage command, and its Salvage button brings back what is readable."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import gui_helpers  # noqa: F401  (offscreen Qt)
import pytest
from gui_helpers import close_window, make_window, threads_are_joined  # noqa: F401 (autouse: no thread outlives a test)

from desktop.paths import AppPaths
from olmo3.store import CURRENT_VERSION, ConversationStore


def _corrupt_one_message_page(path: Path) -> None:
    conn = sqlite3.connect(path)
    pages = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = 'messages' AND pagetype = 'leaf'")]
    conn.close()
    data = bytearray(path.read_bytes())
    start = (pages[len(pages) // 2] - 1) * 4096 + 8
    data[start : start + 200] = bytes((i * 131 + 7) % 256 for i in range(200))
    path.write_bytes(bytes(data))


def _fill(path: Path, conversations: int = 8, messages: int = 16) -> None:
    with ConversationStore(path) as store:
        for c in range(conversations):
            conv = store.create_conversation(title=f"kept {c}")
            parent = None
            for i in range(messages):
                role = "user" if i % 2 == 0 else "assistant"
                parent = store.append_message(conv, parent, role, f"text {c}.{i} " + "lorem ipsum " * 30)


def test_damaged_store_is_kept_aside_and_salvaged(qtbot, tmp_path: Path) -> None:
    paths = AppPaths.under(tmp_path).ensure()
    _fill(paths.database)
    _corrupt_one_message_page(paths.database)
    digest = hashlib.sha256(paths.database.read_bytes()).hexdigest()

    window = make_window(qtbot, tmp_path, start_engine=False)
    notice = window.damaged_store_notice
    assert notice is not None
    aside = notice.kept.aside
    assert aside.parent == paths.database.parent and aside.name.startswith(paths.database.name + ".damaged-")
    assert hashlib.sha256(aside.read_bytes()).hexdigest() == digest  # moved, not changed
    assert window.store.list_conversations() == []  # a new store
    qtbot.waitUntil(lambda: notice.box.isVisible(), timeout=5000)
    assert str(aside) in notice.box.text() and "olmo3 store recover" in notice.box.text()

    imported, refused = notice.salvage()
    assert refused == 0 and imported == 8
    titles = {c.title for c in window.store.list_conversations()}
    assert titles == {f"kept {c}" for c in range(8)}
    assert sorted(window.sidebar.visible_ids()) == sorted(c.id for c in window.store.list_conversations())
    assert "Salvaged 8 conversation(s)" in window.toast.label.text()
    assert hashlib.sha256(aside.read_bytes()).hexdigest() == digest
    close_window(window)


def test_newer_store_is_never_moved(qtbot, tmp_path: Path) -> None:
    """A database from a newer Olmo Desktop: the app refuses to start (exit 2, one line) and leaves it be."""
    paths = AppPaths.under(tmp_path).ensure()
    _fill(paths.database, 1, 2)
    conn = sqlite3.connect(paths.database)
    conn.execute(f"PRAGMA user_version = {CURRENT_VERSION + 1}")
    conn.commit()
    conn.close()
    digest = hashlib.sha256(paths.database.read_bytes()).hexdigest()
    files = sorted(p.name for p in paths.database.parent.iterdir())
    r = subprocess.run(
        [sys.executable, "-m", "desktop", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("olmo-desktop:")]
    assert len(lines) == 1 and "newer Olmo Desktop" in lines[0] and "Traceback" not in r.stderr
    assert hashlib.sha256(paths.database.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in paths.database.parent.iterdir()) == files


@pytest.mark.parametrize("content", [b"not a database at all\n" * 50, bytes(8192)])
def test_garbage_at_the_store_path_is_kept_aside(qtbot, tmp_path: Path, content: bytes) -> None:
    paths = AppPaths.under(tmp_path).ensure()
    paths.database.write_bytes(content)
    window = make_window(qtbot, tmp_path, start_engine=False)
    assert window.damaged_store_notice is not None
    assert window.damaged_store_notice.kept.aside.read_bytes() == content
    window.store.create_conversation(title="works")
    close_window(window)
