"""Files the store refuses stay byte-identical with nothing created beside them; damage is named, kept, salvaged.

Every case builds a real file, records its sha256 and the folder's listing, opens it, and checks the error class,
that the message names the file, and that neither the bytes nor the folder changed. ``olmo3 store check`` and
``olmo3 store recover`` run as real processes.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from olmo3.store import (
    CURRENT_VERSION,
    ConversationStore,
    DamagedStoreError,
    NewerStoreError,
    NotAStoreError,
    StoreError,
)
from olmo3.store.health import APPLICATION_ID, check

OLMO3 = [sys.executable, "-m", "olmo3.cli"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def make_store(path: Path, conversations: int = 12, messages: int = 16) -> None:
    """A real store with enough rows for several pages of messages (~400 bytes each)."""
    with ConversationStore(path) as store:
        for c in range(conversations):
            conv = store.create_conversation(title=f"conversation {c}")
            parent = None
            for i in range(messages):
                role = "user" if i % 2 == 0 else "assistant"
                parent = store.append_message(conv, parent, role, f"message {c}.{i} " + "lorem ipsum " * 30)


def raw_sqlite(path: Path, *statements: str, wal: bool = False) -> None:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    for stmt in statements:
        conn.execute(stmt)
    conn.commit()
    conn.close()


def leaf_pages(path: Path, table: str) -> list[int]:
    conn = sqlite3.connect(path)
    pages = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf'", (table,))]
    conn.close()
    return pages


def corrupt_page(path: Path, page: int, *, offset: int = 8, length: int = 200, seed: int = 0) -> None:
    """Overwrite bytes of one page (its cell pointers, from ``offset``) with seeded noise."""
    data = bytearray(path.read_bytes())
    start = (page - 1) * 4096 + offset
    data[start : start + length] = bytes((i * 131 + seed * 17 + 7) % 256 for i in range(length))
    path.write_bytes(bytes(data))


def set_header(path: Path, offset: int, value: bytes) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + len(value)] = value
    path.write_bytes(bytes(data))


# ---- the table of refused files ----------------------------------------------------------------------------


def _text(p: Path) -> None:
    p.write_bytes(b"this is not a database\n" * 200)


def _random(p: Path) -> None:
    p.write_bytes(bytes((i * 7919 + 13) % 256 for i in range(8192)))


def _zeros(p: Path) -> None:
    p.write_bytes(bytes(4096))


def _short_header(p: Path) -> None:
    p.write_bytes(b"SQLite format 3\x00" + b"\x10\x00\x01")


def _magic_then_noise(p: Path) -> None:
    p.write_bytes(b"SQLite format 3\x00" + bytes((i * 31 + 5) % 256 for i in range(8176)))


def _foreign_tables(p: Path) -> None:
    raw_sqlite(p, "CREATE TABLE notes (x)", "INSERT INTO notes VALUES ('hello')")


def _foreign_wal(p: Path) -> None:
    raw_sqlite(p, "CREATE TABLE notes (x)", "INSERT INTO notes VALUES ('hello')", wal=True)


def _foreign_user_version(p: Path) -> None:
    raw_sqlite(p, "CREATE TABLE notes (x)", f"PRAGMA user_version = {CURRENT_VERSION}")


def _foreign_application_id(p: Path) -> None:
    raw_sqlite(p, "CREATE TABLE notes (x)", "PRAGMA application_id = 1179476547")  # another program's id


def _our_tables_other_app(p: Path) -> None:
    make_store(p, 2, 2)
    raw_sqlite(p, "PRAGMA application_id = 1179476547")


def _newer_schema(p: Path) -> None:
    make_store(p, 2, 2)
    raw_sqlite(p, f"PRAGMA user_version = {CURRENT_VERSION + 1}")


def _much_newer_schema_rollback_journal(p: Path) -> None:
    make_store(p, 2, 2)
    raw_sqlite(p, "PRAGMA journal_mode = DELETE", "PRAGMA user_version = 99")


def _newer_file_format(p: Path) -> None:
    make_store(p, 2, 2)
    set_header(p, 18, b"\x03\x03")


def _newer_write_format_only(p: Path) -> None:
    make_store(p, 2, 2)
    set_header(p, 18, b"\x03")


def _damaged_message_page(p: Path) -> None:
    make_store(p)
    pages = leaf_pages(p, "messages")
    corrupt_page(p, pages[len(pages) // 2])


def _damaged_conversation_page(p: Path) -> None:
    make_store(p, 40, 1)
    corrupt_page(p, leaf_pages(p, "conversations")[0])


def _damaged_two_pages(p: Path) -> None:
    make_store(p)
    pages = leaf_pages(p, "messages")
    corrupt_page(p, pages[1], seed=1)
    corrupt_page(p, pages[-2], seed=2)


def _damaged_index_page(p: Path) -> None:
    make_store(p)
    corrupt_page(p, leaf_pages(p, "messages_by_conversation")[0], offset=0, length=12)


def _damaged_truncated(p: Path) -> None:
    make_store(p)
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size // 2)


Case = tuple[str, Callable[[Path], None], type[StoreError]]

REFUSED: list[Case] = [
    ("text file", _text, NotAStoreError),
    ("random bytes", _random, NotAStoreError),
    ("zero bytes (4 KiB)", _zeros, NotAStoreError),
    ("SQLite magic, short header", _short_header, NotAStoreError),
    ("SQLite magic, then noise", _magic_then_noise, NotAStoreError),
    ("another program's SQLite file", _foreign_tables, NotAStoreError),
    ("another program's SQLite file in WAL mode", _foreign_wal, NotAStoreError),
    ("another program's file with a user_version", _foreign_user_version, NotAStoreError),
    ("another program's application id", _foreign_application_id, NotAStoreError),
    ("our tables under another application id", _our_tables_other_app, NotAStoreError),
    ("newer schema (user_version + 1), WAL", _newer_schema, NewerStoreError),
    ("user_version 99, rollback journal", _much_newer_schema_rollback_journal, NewerStoreError),
    ("newer SQLite file format (read and write)", _newer_file_format, NewerStoreError),
    ("newer SQLite write format", _newer_write_format_only, NewerStoreError),
    ("damaged message page", _damaged_message_page, DamagedStoreError),
    ("damaged conversation page", _damaged_conversation_page, DamagedStoreError),
    ("two damaged message pages", _damaged_two_pages, DamagedStoreError),
    ("damaged index page", _damaged_index_page, DamagedStoreError),
    ("truncated to half", _damaged_truncated, DamagedStoreError),
]


@pytest.mark.parametrize(("name", "build", "error"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_file_stays_byte_identical(tmp_path: Path, name: str, build, error) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "conversations.sqlite3"
    build(path)
    before, files = sha(path), listing(folder)
    for _ in range(2):  # a second attempt (the app's next start) changes nothing either
        with pytest.raises(error) as info:
            ConversationStore(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        assert sha(path) == before, f"{name}: the refused file changed"
        assert listing(folder) == files, f"{name}: files appeared beside it: {set(listing(folder)) - set(files)}"
    if error is DamagedStoreError:
        assert "olmo3 store recover" in str(info.value)  # the way out


def test_refusal_while_another_process_has_the_newer_store_open(tmp_path: Path) -> None:
    """A newer version running now: its -wal holds the newer user_version; we read it and refuse, touching nothing."""
    path = tmp_path / "conversations.sqlite3"
    make_store(path, 2, 2)
    holder = sqlite3.connect(path)
    holder.execute("PRAGMA journal_mode = WAL")
    holder.execute("PRAGMA wal_autocheckpoint = 0")
    holder.execute(f"PRAGMA user_version = {CURRENT_VERSION + 1}")
    holder.commit()
    try:
        main_before, wal_before = sha(path), sha(path.with_name(path.name + "-wal"))
        files = listing(tmp_path)
        with pytest.raises(NewerStoreError):
            ConversationStore(path)
        assert (sha(path), sha(path.with_name(path.name + "-wal"))) == (main_before, wal_before)
        assert listing(tmp_path) == files
    finally:
        holder.close()


def test_accepted_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite3"
    empty.write_bytes(b"")
    with ConversationStore(empty) as store:  # an empty file is a new store
        store.create_conversation(title="first")
    old = tmp_path / "old.sqlite3"
    make_store(old, 2, 2)
    raw_sqlite(old, "PRAGMA application_id = 0")  # a store from before the application id
    with ConversationStore(old) as store:
        assert len(store.list_conversations()) == 2
    for path in (empty, old):
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        conn.close()


# ---- olmo3 store check / recover -----------------------------------------------------------------------------


def olmo3(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OLMO3, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_store_check_exit_codes(tmp_path: Path) -> None:
    healthy, damaged, foreign, newer = (tmp_path / f"{n}.sqlite3" for n in ("healthy", "damaged", "foreign", "newer"))
    make_store(healthy, 3, 4)
    _damaged_message_page(damaged)
    _foreign_tables(foreign)
    _newer_schema(newer)
    sums = {p: sha(p) for p in (healthy, damaged, foreign, newer)}
    files = listing(tmp_path)

    r = olmo3("store", "check", "--db", healthy)
    assert r.returncode == 0 and "healthy" in r.stdout and "3 conversations, 12 messages" in r.stdout, r
    r = olmo3("store", "check", "--db", damaged)
    assert r.returncode == 1 and "damaged" in r.stdout and "olmo3 store recover" in r.stdout, r
    for path in (foreign, newer, tmp_path / "missing.sqlite3"):
        r = olmo3("store", "check", "--db", path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and str(path) in r.stderr, r
        assert "Traceback" not in r.stderr
    assert {p: sha(p) for p in sums} == sums and listing(tmp_path) == files


@pytest.mark.parametrize("build", [_damaged_message_page, _damaged_two_pages, _damaged_conversation_page])
def test_store_recover_saves_what_is_readable(tmp_path: Path, build) -> None:
    damaged = tmp_path / "damaged.sqlite3"
    build(damaged)
    before = sha(damaged)
    dest = tmp_path / "recovered.sqlite3"
    r = olmo3("store", "recover", dest, "--db", damaged)
    assert r.returncode == 0, r.stderr
    assert "saved" in r.stdout and "skipped" in r.stdout
    assert sha(damaged) == before
    assert check(dest).healthy
    with ConversationStore(dest) as store:
        conversations = store.list_conversations()
        total = sum(len(store.tree(c.id)) for c in conversations)
        assert 0 < total < 12 * 16 or build is _damaged_conversation_page
        for conv in conversations:  # every salvaged conversation is whole enough to show and export
            path = store.active_path(conv.id)
            assert all(m.parent_id is None for m in path[:1])
            store.export_dict(conv.id)
        assert store.search("lorem")  # the search index was rebuilt
    r = olmo3("store", "recover", dest, "--db", damaged)
    assert r.returncode == 2 and "exists" in r.stderr  # never over an existing file


def test_salvage_counts_match_the_damage(tmp_path: Path) -> None:
    """Exactly the rows on the damaged page are lost; everything else comes back, ids and text intact."""
    from olmo3.store.salvage import salvage

    path = tmp_path / "s.sqlite3"
    make_store(path)
    conn = sqlite3.connect(path)
    texts = dict(conn.execute("SELECT id, content FROM messages"))
    page = leaf_pages(path, "messages")[3]
    conn.close()
    corrupt_page(path, page)
    report = salvage(path, tmp_path / "out.sqlite3")
    with ConversationStore(tmp_path / "out.sqlite3") as store:
        got = {m.id: m.content for c in store.list_conversations() for m in store.tree(c.id)}
    assert report.messages == len(got) and report.conversations == 12
    assert all(texts[i] == t for i, t in got.items())  # nothing garbled comes back
    assert 0 < len(texts) - len(got) <= 10  # one page of ~400-byte rows
