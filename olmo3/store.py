"""Crash-safe conversation store: SQLite (stdlib), WAL, FTS5 search, trash, branches, streaming.

Why it looks the way it does:

* Lost chats are the top complaint against other local-LLM apps, so every write is a real SQLite
  transaction in WAL mode with ``synchronous=FULL``; a SIGKILL or power cut can lose at most the
  streamed text of the last second (see :meth:`ConversationStore.stream_append`), never a
  completed message.
* Messages form a tree (regenerate and edit create siblings). Each sibling group has exactly one
  *active* member (enforced by a partial unique index), so the visible transcript is "follow the
  active child from the root", and every branch remembers which of its own children was shown.
* The schema is versioned with ``PRAGMA user_version`` and an explicit list of migrations
  (:data:`MIGRATIONS`); migrating an existing file first writes a ``.vN.bak`` copy next to it.
* A store object belongs to the thread that opened it (sqlite3's ``check_same_thread``); another
  thread or process may open its own :class:`ConversationStore` on the same file. Streams are
  tagged with the opening session, whose liveness is an ``flock`` held on a small lock file, so a
  second store marks only the streams of *dead* sessions as interrupted.

This module must stay Qt-free: the CLI uses it too.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

try:  # POSIX only; without it every other session counts as dead (the pre-session behaviour).
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "APP_NAME",
    "CURRENT_VERSION",
    "DEFAULT_TITLE",
    "MATCH_END",
    "MATCH_START",
    "MIGRATIONS",
    "Conversation",
    "ConversationStore",
    "Message",
    "NotFoundError",
    "SearchHit",
    "StoreError",
    "build_fts_query",
    "default_db_path",
    "make_title",
    "snippet_to_html",
]

APP_NAME: Final = "Olmo Desktop"
DB_FILENAME: Final = "conversations.sqlite3"
DEFAULT_TITLE: Final = "New conversation"
TITLE_LIMIT: Final = 60
TRASH_RETENTION_DAYS: Final = 30.0
FLUSH_INTERVAL_S: Final = 1.0
# Match markers in search snippets: private-use code points that never occur in normal text, so
# the GUI can escape the snippet first and then turn the markers into <b>/<mark> (snippet_to_html).
MATCH_START: Final = "\ue000"
MATCH_END: Final = "\ue001"

Role = Literal["system", "user", "assistant"]
State = Literal["streaming", "complete", "interrupted", "error"]
Channel = Literal["answer", "reasoning"]
ROLES: Final = ("system", "user", "assistant")
STATES: Final = ("streaming", "complete", "interrupted", "error")
FINAL_STATES: Final = ("complete", "interrupted", "error")


class StoreError(Exception):
    """The database cannot be used as a conversation store (wrong file, newer schema, ...)."""


class NotFoundError(StoreError, LookupError):
    """A conversation or message id that is not in the store."""


# --------------------------------------------------------------------------------------------
# Schema and migrations
# --------------------------------------------------------------------------------------------

_FTS_TOKENIZE = "tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3'"

# Version 1: the first schema. Never edit a shipped migration; add a new one instead
# (tests/test_store.py keeps a frozen copy of v1 and v2 and fails if these drift).
_V1: Final[tuple[str, ...]] = (
    """CREATE TABLE conversations (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        title TEXT NOT NULL DEFAULT '',
        model_id TEXT,
        system_prompt TEXT,
        sampling TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        pinned INTEGER NOT NULL DEFAULT 0,
        deleted_at REAL
    )""",
    """CREATE TABLE messages (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        parent_id TEXT REFERENCES messages(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL DEFAULT '',
        reasoning TEXT NOT NULL DEFAULT '',
        token_ids TEXT,
        stats TEXT,
        state TEXT NOT NULL DEFAULT 'complete'
            CHECK (state IN ('streaming', 'complete', 'interrupted', 'error')),
        created_at REAL NOT NULL,
        active INTEGER NOT NULL DEFAULT 1
    )""",
    "CREATE INDEX messages_by_conversation ON messages(conversation_id, seq)",
    "CREATE INDEX messages_by_parent ON messages(parent_id)",
    """CREATE UNIQUE INDEX messages_one_active_child
        ON messages(conversation_id, ifnull(parent_id, '')) WHERE active = 1""",
    "CREATE INDEX conversations_by_recency ON conversations(deleted_at, pinned, updated_at)",
)

# Version 2: model revision, folders, renames that stick, provenance per message.
_V2: Final[tuple[str, ...]] = (
    "ALTER TABLE conversations ADD COLUMN model_revision TEXT",
    "ALTER TABLE conversations ADD COLUMN folder TEXT",
    "ALTER TABLE conversations ADD COLUMN title_is_auto INTEGER NOT NULL DEFAULT 1",
    # v1 could not tell auto titles from renamed ones: keep every existing title as it is.
    "UPDATE conversations SET title_is_auto = 0",
    "ALTER TABLE messages ADD COLUMN provenance TEXT",
    "CREATE INDEX conversations_by_folder ON conversations(folder)",
)

# Version 3: full-text search (external-content FTS5 kept in sync by triggers), the engine's
# opaque state per conversation, and the session that owns a streaming message.
_V3: Final[tuple[str, ...]] = (
    "ALTER TABLE conversations ADD COLUMN engine_state TEXT",
    "ALTER TABLE messages ADD COLUMN stream_owner TEXT",
    f"""CREATE VIRTUAL TABLE conversations_fts USING fts5(
        title, content = 'conversations', content_rowid = 'seq', {_FTS_TOKENIZE})""",
    f"""CREATE VIRTUAL TABLE messages_fts USING fts5(
        content, reasoning, content = 'messages', content_rowid = 'seq', {_FTS_TOKENIZE})""",
    """CREATE TRIGGER conversations_fts_insert AFTER INSERT ON conversations BEGIN
        INSERT INTO conversations_fts(rowid, title) VALUES (new.seq, new.title);
    END""",
    """CREATE TRIGGER conversations_fts_delete AFTER DELETE ON conversations BEGIN
        INSERT INTO conversations_fts(conversations_fts, rowid, title)
            VALUES ('delete', old.seq, old.title);
    END""",
    """CREATE TRIGGER conversations_fts_update AFTER UPDATE OF title ON conversations BEGIN
        INSERT INTO conversations_fts(conversations_fts, rowid, title)
            VALUES ('delete', old.seq, old.title);
        INSERT INTO conversations_fts(rowid, title) VALUES (new.seq, new.title);
    END""",
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content, reasoning)
            VALUES (new.seq, new.content, new.reasoning);
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content, reasoning)
            VALUES ('delete', old.seq, old.content, old.reasoning);
    END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, reasoning ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content, reasoning)
            VALUES ('delete', old.seq, old.content, old.reasoning);
        INSERT INTO messages_fts(rowid, content, reasoning)
            VALUES (new.seq, new.content, new.reasoning);
    END""",
    "INSERT INTO conversations_fts(conversations_fts) VALUES ('rebuild')",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
)


def _statements(stmts: Sequence[str]) -> Callable[[sqlite3.Connection], None]:
    """Wrap DDL/DML statements as a migration step (executescript would commit mid-transaction)."""

    def apply(conn: sqlite3.Connection) -> None:
        for stmt in stmts:
            conn.execute(stmt)

    return apply


@dataclass(frozen=True)
class Migration:
    """One schema step: applying it to a database at ``version - 1`` yields ``version``."""

    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "conversations and message tree", _statements(_V1)),
    Migration(2, "model revision, folders, sticky renames, provenance", _statements(_V2)),
    Migration(3, "FTS5 search, engine state, stream owners", _statements(_V3)),
)
CURRENT_VERSION: Final = MIGRATIONS[-1].version


def default_db_path() -> Path:
    """``<platformdirs user data dir>/Olmo Desktop/conversations.sqlite3`` (created on demand)."""
    import platformdirs  # local import: keep `import olmo3.store` cheap for the crash-test child

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / DB_FILENAME


# --------------------------------------------------------------------------------------------
# Value objects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation's metadata (``engine_state`` is fetched separately: it can be large)."""

    id: str
    title: str
    title_is_auto: bool
    model_id: str | None
    model_revision: str | None
    system_prompt: str | None  # None = the model's default system prompt
    sampling: dict[str, Any]
    created_at: float  # Unix seconds
    updated_at: float  # last message activity (renames and pins do not reorder the list)
    pinned: bool
    folder: str | None
    deleted_at: float | None  # set while in the trash


@dataclass(frozen=True, slots=True)
class Message:
    """One node of a conversation's message tree.

    ``sibling_index``/``sibling_count`` place it among the alternatives under the same parent
    (the "‹ 2 / 3 ›" branch switcher shows ``sibling_index + 1`` / ``sibling_count``).
    """

    id: str
    conversation_id: str
    parent_id: str | None
    role: Role
    content: str
    reasoning: str
    token_ids: list[int] | None
    stats: dict[str, Any] | None
    provenance: dict[str, Any] | None
    state: State
    created_at: float
    active: bool
    sibling_index: int
    sibling_count: int


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A search result; ``message_id`` is None for a title hit.

    ``rank`` is the BM25 score within its kind (titles or messages); lower is better.
    """

    conv_id: str
    message_id: str | None
    title: str
    snippet: str  # matches wrapped in MATCH_START ... MATCH_END
    rank: float


@dataclass(slots=True)
class _Stream:
    conversation_id: str
    answer: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    last_commit: float = 0.0  # time.monotonic() when the last commit was *decided*

    def pending(self) -> tuple[str, str]:
        return "".join(self.answer), "".join(self.reasoning)

    def has_pending(self) -> bool:
        return bool(self.answer or self.reasoning)

    def clear(self) -> None:
        self.answer.clear()
        self.reasoning.clear()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def make_title(text: str, limit: int = TITLE_LIMIT) -> str:
    """A sidebar title from a first user message: whitespace collapsed, cut on a word boundary."""
    words = " ".join(text.split())
    if not words:
        return DEFAULT_TITLE
    if len(words) <= limit:
        return words
    head = words[: limit + 1]
    space = head.rfind(" ")
    # Cut at the last space unless that would leave a stub (one giant word: cut inside it).
    head = head[:space] if space >= limit // 2 else words[:limit]
    return head.rstrip(" ,.;:!?-–—") + "…"


def build_fts_query(text: str) -> str | None:
    """Turn what the user typed into a safe FTS5 query, or None when there is nothing to search.

    Every whitespace-separated term is quoted (so ``AND``, ``NEAR(``, ``"``, ``col:x`` and ``*``
    are plain text), terms are ANDed, and the last term is a prefix match while the user is still
    typing it (no trailing space).
    """
    terms = [t for t in text.split() if any(ch.isalnum() for ch in t)]
    if not terms:
        return None
    parts = ['"' + t.replace('"', '""') + '"' for t in terms]
    if not text[-1].isspace():
        parts[-1] += " *"
    return " ".join(parts)


def snippet_to_html(snippet: str, tag: str = "b") -> str:
    """Escape a search snippet for Qt rich text / HTML and turn the match markers into tags."""
    import html

    return html.escape(snippet, quote=False).replace(MATCH_START, f"<{tag}>").replace(MATCH_END, f"</{tag}>")


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable (no NaN/inf): {exc}") from None


def _dumps_opt(value: Any, what: str) -> str | None:
    return None if value is None else _dumps(value, what)


def _loads_opt(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _check_dict(value: Any, what: str) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a dict or None, not {type(value).__name__}")


def _encode_token_ids(token_ids: Sequence[int] | None) -> str | None:
    if token_ids is None:
        return None
    ids = list(token_ids)
    for i, t in enumerate(ids):
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"token_ids[{i}] must be a non-negative int, not {t!r}")
    return json.dumps(ids, separators=(",", ":"))


def _remap_ids(value: Any, mapping: Mapping[str, str]) -> Any:
    """Replace every string (or dict key) that *equals* an old id with the new one.

    The engine state is opaque to us but may refer to message ids; ids are UUIDs, so an exact
    match is never ordinary text. Substrings are left alone.
    """
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, list):
        return [_remap_ids(v, mapping) for v in value]
    if isinstance(value, dict):
        return {mapping.get(k, k): _remap_ids(v, mapping) for k, v in value.items()}
    return value


def _new_id() -> str:
    return str(uuid.uuid4())


class _Sessions:
    """Liveness of store sessions through ``flock`` on ``<db>-sessions/<token>.lock``.

    The kernel drops an flock when its process dies (even on SIGKILL), and two opens of the same
    file conflict even inside one process, so "can I lock it?" answers "is that session dead?"
    for other threads and other processes alike.
    """

    STALE_AGE_S = 60.0  # never sweep a lock file younger than this (its owner may be starting)

    def __init__(self, db_path: Path) -> None:
        self.dir = db_path.with_name(db_path.name + "-sessions")
        self.token = uuid.uuid4().hex
        self._fd: int | None = None
        if fcntl is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(self.token)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd = fd

    def _path(self, token: str) -> Path:
        return self.dir / f"{token}.lock"

    def is_alive(self, token: str) -> bool:
        if token == self.token:
            return True
        if fcntl is None or not all(c in "0123456789abcdef" for c in token):
            return False
        try:
            fd = os.open(self._path(token), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            self._path(token).unlink(missing_ok=True)
            return False
        finally:
            os.close(fd)

    def sweep(self) -> None:
        """Remove lock files of sessions that died without streaming anything."""
        if fcntl is None:
            return
        now = time.time()
        for path in self.dir.glob("*.lock"):
            try:
                if now - path.stat().st_mtime > self.STALE_AGE_S:
                    self.is_alive(path.stem)
            except OSError:
                continue

    def close(self) -> None:
        if self._fd is not None:
            self._path(self.token).unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------

_CONV_COLUMNS = (
    "id, title, title_is_auto, model_id, model_revision, system_prompt, sampling, "
    "created_at, updated_at, pinned, folder, deleted_at"
)

_MSG_COLUMNS = (
    "id, conversation_id, parent_id, role, content, reasoning, token_ids, stats, provenance, state, created_at, active"
)

_UNSET: Any = object()


class ConversationStore:
    """All conversations of the app in one SQLite file.

    Use one object per thread (it raises ``sqlite3.ProgrammingError`` when used from another);
    open a second ``ConversationStore`` on the same path for another thread or process.
    Close it (or use ``with``) so pending streamed text is committed and streams are finished.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        flush_interval: float = FLUSH_INTERVAL_S,
        trash_retention_days: float | None = TRASH_RETENTION_DAYS,
    ) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.flush_interval = flush_interval
        self._streams: dict[str, _Stream] = {}
        self._tx_depth = 0
        self._tx_writes = False
        self._sessions: _Sessions | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            self._configure()
            self._migrate()
            self._sessions = _Sessions(self.path)
            self._recover_streams()
            if trash_retention_days is not None:
                self.purge_trash(trash_retention_days)
        except BaseException:
            self._conn.close()
            if self._sessions is not None:
                self._sessions.close()
            raise

    # ---- lifecycle ---------------------------------------------------------------------------

    def _configure(self) -> None:
        conn = self._conn
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a conversation database: {exc}") from exc
        if mode.lower() != "wal":
            raise StoreError(f"{self.path}: could not switch to WAL journal mode (got {mode!r})")
        conn.execute("PRAGMA foreign_keys = ON")
        # FULL: the WAL is synced at every commit, so a power cut loses no committed text.
        conn.execute("PRAGMA synchronous = FULL")
        if sys.platform == "darwin":  # macOS fsync does not reach the platter without this
            conn.execute("PRAGMA fullfsync = ON")
        opts = {row[0] for row in conn.execute("PRAGMA compile_options")}
        if "ENABLE_FTS5" not in opts:
            raise StoreError(f"this Python's SQLite {sqlite3.sqlite_version} lacks FTS5")

    def _migrate(self) -> None:
        conn = self._conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > CURRENT_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, written by a newer Olmo Desktop "
                f"(this one reads up to {CURRENT_VERSION}); it was left untouched"
            )
        if version == CURRENT_VERSION:
            return
        if version > 0:
            self._backup(version)
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(f"{self.path} is an SQLite file but not a conversation store")
            for migration in MIGRATIONS:
                if migration.version > version:
                    migration.apply(conn)
                    conn.execute(f"PRAGMA user_version = {migration.version}")
            problems = conn.execute("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise StoreError(f"{self.path}: foreign key problems after migration: {problems}")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, (StoreError, KeyboardInterrupt)):
                raise
            raise StoreError(f"{self.path}: migration from version {version} failed: {exc}") from exc
        conn.execute("COMMIT")

    def _backup(self, version: int) -> None:
        """Copy the database before migrating it; an existing backup (the older one) is kept."""
        backup = self.path.with_name(f"{self.path.name}.v{version}.bak")
        if backup.exists():
            return
        tmp = backup.with_name(f"{backup.name}.{uuid.uuid4().hex}.tmp")  # two openers at once
        dest = sqlite3.connect(tmp)
        try:
            self._conn.backup(dest)
        finally:
            dest.close()
        os.replace(tmp, backup)

    def _recover_streams(self) -> None:
        """Mark messages left 'streaming' by dead sessions (crash, kill) as 'interrupted'."""
        owners = [
            row[0] for row in self._conn.execute("SELECT DISTINCT stream_owner FROM messages WHERE state = 'streaming'")
        ]
        sessions = self._sessions
        assert sessions is not None
        dead = [o for o in owners if o is None or not sessions.is_alive(o)]
        if dead:
            with self._write() as conn:
                for owner in dead:
                    conn.execute(
                        "UPDATE messages SET state = 'interrupted', stream_owner = NULL "
                        "WHERE state = 'streaming' AND stream_owner IS ?",
                        (owner,),
                    )
        sessions.sweep()

    def close(self) -> None:
        """Commit pending streamed text, finish open streams as 'interrupted', close the file."""
        if self._conn is None:  # type: ignore[comparison-overlap]
            return
        try:
            for message_id in list(self._streams):
                self.finish_stream(message_id, "interrupted")
        finally:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]
            if self._sessions is not None:
                self._sessions.close()

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    # ---- transactions ------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction (nested calls join the outer one): all or nothing."""
        if self._tx_depth:
            if not self._tx_writes:  # a deferred read snapshot cannot safely become a writer
                raise RuntimeError("internal error: write inside a read snapshot")
            self._tx_depth += 1
            try:
                yield self._conn
            finally:
                self._tx_depth -= 1
            return
        self._conn.execute("BEGIN IMMEDIATE")
        self._tx_depth, self._tx_writes = 1, True
        try:
            yield self._conn
        except BaseException:
            self._tx_depth = 0
            self._conn.execute("ROLLBACK")
            raise
        self._tx_depth = 0
        self._conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for multi-statement reads."""
        if self._tx_depth:
            yield self._conn
            return
        self._conn.execute("BEGIN")
        self._tx_depth, self._tx_writes = 1, False
        try:
            yield self._conn
        finally:
            self._tx_depth = 0
            self._conn.execute("COMMIT")

    # ---- conversations -----------------------------------------------------------------------

    def create_conversation(
        self,
        *,
        title: str | None = None,
        model_id: str | None = None,
        model_revision: str | None = None,
        system_prompt: str | None = None,
        sampling: Mapping[str, Any] | None = None,
        folder: str | None = None,
    ) -> str:
        """Create an empty conversation; without ``title`` it is named after the first message."""
        _check_dict(sampling, "sampling")
        now = time.time()
        conv_id = _new_id()
        name = " ".join(title.split()) if title is not None else ""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO conversations (id, title, title_is_auto, model_id, model_revision, "
                "system_prompt, sampling, created_at, updated_at, folder) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conv_id,
                    name or DEFAULT_TITLE,
                    0 if name else 1,
                    model_id,
                    model_revision,
                    system_prompt,
                    _dumps(dict(sampling or {}), "sampling"),
                    now,
                    now,
                    _clean_folder(folder),
                ),
            )
        return conv_id

    def get_conversation(self, conv_id: str) -> Conversation:
        row = self._conn.execute(f"SELECT {_CONV_COLUMNS} FROM conversations WHERE id = ?", (conv_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no conversation with id {conv_id!r}")
        return _conversation(row)

    def list_conversations(self, folder: str | None = None) -> list[Conversation]:
        """Conversations not in the trash: pinned first, then most recently active first."""
        sql = f"SELECT {_CONV_COLUMNS} FROM conversations WHERE deleted_at IS NULL"
        args: tuple[Any, ...] = ()
        if folder is not None:
            sql += " AND folder = ?"
            args = (folder,)
        sql += " ORDER BY pinned DESC, updated_at DESC, seq DESC"
        return [_conversation(r) for r in self._conn.execute(sql, args)]

    def list_folders(self) -> list[str]:
        rows = self._conn.execute(
            "SELECT DISTINCT folder FROM conversations "
            "WHERE folder IS NOT NULL AND deleted_at IS NULL ORDER BY folder COLLATE NOCASE"
        )
        return [r[0] for r in rows]

    def rename(self, conv_id: str, title: str | None) -> None:
        """Set a title that sticks; ``None`` or blank returns to the automatic title."""
        name = " ".join(title.split()) if title is not None else ""
        with self._write() as conn:
            self._require_conversation(conv_id)
            if name:
                conn.execute(
                    "UPDATE conversations SET title = ?, title_is_auto = 0 WHERE id = ?",
                    (name, conv_id),
                )
            else:
                conn.execute("UPDATE conversations SET title_is_auto = 1 WHERE id = ?", (conv_id,))
                conn.execute(
                    "UPDATE conversations SET title = ? WHERE id = ?",
                    (self._auto_title(conv_id), conv_id),
                )

    def _auto_title(self, conv_id: str) -> str:
        """Title from the first user message on the active path."""
        for msg in self.active_path(conv_id):
            if msg.role == "user":
                return make_title(msg.content)
        return DEFAULT_TITLE

    def set_pinned(self, conv_id: str, pinned: bool = True) -> None:
        self._update_conversation(conv_id, "pinned = ?", (1 if pinned else 0,))

    def pin(self, conv_id: str) -> None:
        self.set_pinned(conv_id, True)

    def unpin(self, conv_id: str) -> None:
        self.set_pinned(conv_id, False)

    def set_folder(self, conv_id: str, folder: str | None) -> None:
        self._update_conversation(conv_id, "folder = ?", (_clean_folder(folder),))

    def update_settings(
        self,
        conv_id: str,
        *,
        model_id: str | None = _UNSET,
        model_revision: str | None = _UNSET,
        system_prompt: str | None = _UNSET,
        sampling: Mapping[str, Any] = _UNSET,
    ) -> None:
        """Change the model, system prompt (None = model default) or sampling settings."""
        sets: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("model_id", model_id),
            ("model_revision", model_revision),
            ("system_prompt", system_prompt),
        ):
            if value is not _UNSET:
                if value is not None and not isinstance(value, str):
                    raise ValueError(f"{column} must be a str or None, not {type(value).__name__}")
                sets.append(f"{column} = ?")
                args.append(value)
        if sampling is not _UNSET:
            if not isinstance(sampling, Mapping):
                raise ValueError(f"sampling must be a dict, not {type(sampling).__name__}")
            sets.append("sampling = ?")
            args.append(_dumps(dict(sampling), "sampling"))
        if sets:
            self._update_conversation(conv_id, ", ".join(sets), tuple(args))

    def _update_conversation(self, conv_id: str, assignments: str, args: tuple[Any, ...]) -> None:
        with self._write() as conn:
            cur = conn.execute(f"UPDATE conversations SET {assignments} WHERE id = ?", (*args, conv_id))
            if cur.rowcount == 0:
                raise NotFoundError(f"no conversation with id {conv_id!r}")

    def _require_conversation(self, conv_id: str) -> None:
        if self._conn.execute("SELECT 1 FROM conversations WHERE id = ?", (conv_id,)).fetchone() is None:
            raise NotFoundError(f"no conversation with id {conv_id!r}")

    # ---- engine state ------------------------------------------------------------------------

    def set_engine_state(self, conv_id: str, state: Mapping[str, Any] | None) -> None:
        """Store the engine's opaque JSON state (token-exact transcript, branch tree), or clear it."""
        _check_dict(state, "engine_state")
        text = _dumps_opt(None if state is None else dict(state), "engine_state")
        self._update_conversation(conv_id, "engine_state = ?", (text,))

    def get_engine_state(self, conv_id: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT engine_state FROM conversations WHERE id = ?", (conv_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no conversation with id {conv_id!r}")
        return _loads_opt(row[0])

    # ---- trash -------------------------------------------------------------------------------

    def delete(self, conv_id: str) -> None:
        """Move to the trash (undo with :meth:`restore`); purged after the retention period."""
        self.flush()
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE conversations SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
                (time.time(), conv_id),
            )
            if cur.rowcount == 0:
                self._require_conversation(conv_id)  # already in the trash: nothing to do

    def restore(self, conv_id: str) -> None:
        self._update_conversation(conv_id, "deleted_at = NULL", ())

    def list_trash(self) -> list[Conversation]:
        """Trashed conversations, most recently deleted first."""
        rows = self._conn.execute(
            f"SELECT {_CONV_COLUMNS} FROM conversations WHERE deleted_at IS NOT NULL ORDER BY deleted_at DESC, seq DESC"
        )
        return [_conversation(r) for r in rows]

    def trash_count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM conversations WHERE deleted_at IS NOT NULL").fetchone()[0])

    def purge_trash(self, older_than_days: float = TRASH_RETENTION_DAYS, *, now: float | None = None) -> int:
        """Delete for good what has been in the trash longer than ``older_than_days`` (0: all)."""
        if older_than_days < 0 or math.isnan(older_than_days):
            raise ValueError(f"older_than_days must be >= 0, not {older_than_days}")
        cutoff = (time.time() if now is None else now) - older_than_days * 86400.0
        with self._write() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM conversations WHERE deleted_at IS NOT NULL AND deleted_at <= ?",
                    (cutoff,),
                )
            ]
            for conv_id in ids:
                self._forget_streams(conv_id)
                conn.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))
        return len(ids)

    def delete_forever(self, conv_id: str) -> None:
        """Delete a trashed conversation now ("Delete immediately" in the trash view)."""
        with self._write() as conn:
            row = conn.execute("SELECT deleted_at FROM conversations WHERE id = ?", (conv_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no conversation with id {conv_id!r}")
            if row[0] is None:
                raise ValueError(f"conversation {conv_id!r} is not in the trash; delete() it first")
            self._forget_streams(conv_id)
            conn.execute("DELETE FROM conversations WHERE id = ?", (conv_id,))

    def _forget_streams(self, conv_id: str) -> None:
        for mid in [m for m, s in self._streams.items() if s.conversation_id == conv_id]:
            del self._streams[mid]

    # ---- messages ----------------------------------------------------------------------------

    def append_message(
        self,
        conv_id: str,
        parent_id: str | None,
        role: Role,
        content: str,
        *,
        reasoning: str = "",
        token_ids: Sequence[int] | None = None,
        stats: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        state: State = "complete",
        message_id: str | None = None,
    ) -> str:
        """Add a message under ``parent_id`` (None: a new root) and make it the active branch.

        Regenerate and edit are just appends under the same parent: the new message becomes a
        sibling of the old one and the shown branch. ``message_id``: an id made by the caller (the
        GUI shares one id per message with the chat engine); a fresh one otherwise.
        """
        if not isinstance(content, str) or not isinstance(reasoning, str):
            raise ValueError("content and reasoning must be str")
        with self._write():
            msg_id = self._insert_message(
                conv_id, parent_id, role, content, reasoning, token_ids, stats, provenance, state, message_id=message_id
            )
            if role == "user":
                self._maybe_auto_title(conv_id, msg_id)
        return msg_id

    def _insert_message(
        self,
        conv_id: str,
        parent_id: str | None,
        role: str,
        content: str,
        reasoning: str,
        token_ids: Sequence[int] | None,
        stats: Mapping[str, Any] | None,
        provenance: Mapping[str, Any] | None,
        state: str,
        stream_owner: str | None = None,
        message_id: str | None = None,
    ) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, not {state!r}")
        _check_dict(stats, "stats")
        _check_dict(provenance, "provenance")
        conn = self._conn
        self._require_conversation(conv_id)
        if parent_id is not None:
            row = conn.execute("SELECT conversation_id FROM messages WHERE id = ?", (parent_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no message with id {parent_id!r}")
            if row[0] != conv_id:
                raise ValueError(f"message {parent_id!r} belongs to another conversation")
        now = time.time()
        if message_id is not None:
            if not isinstance(message_id, str) or not message_id or len(message_id) > 128:
                raise ValueError(f"bad message id {message_id!r}")
            if conn.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,)).fetchone() is not None:
                raise ValueError(f"message id {message_id!r} is already used")
        msg_id = message_id or _new_id()
        conn.execute(
            "UPDATE messages SET active = 0 WHERE conversation_id = ? AND parent_id IS ? AND active = 1",
            (conv_id, parent_id),
        )
        conn.execute(
            "INSERT INTO messages (id, conversation_id, parent_id, role, content, reasoning, "
            "token_ids, stats, provenance, state, created_at, active, stream_owner) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
            (
                msg_id,
                conv_id,
                parent_id,
                role,
                content,
                reasoning,
                _encode_token_ids(token_ids),
                _dumps_opt(None if stats is None else dict(stats), "stats"),
                _dumps_opt(None if provenance is None else dict(provenance), "provenance"),
                state,
                now,
                stream_owner,
            ),
        )
        conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conv_id))
        return msg_id

    def _maybe_auto_title(self, conv_id: str, msg_id: str) -> None:
        """Name the conversation after its first user message (unless renamed by the user).

        "First" means no user message above it: editing the first message (a new root) renames.
        """
        conn = self._conn
        if not conn.execute("SELECT title_is_auto FROM conversations WHERE id = ?", (conv_id,)).fetchone()[0]:
            return
        earlier_user = conn.execute(
            """WITH RECURSIVE up(id, parent_id, role) AS (
                   SELECT id, parent_id, role FROM messages WHERE id = ?
                   UNION ALL
                   SELECT m.id, m.parent_id, m.role FROM messages m JOIN up ON m.id = up.parent_id
               ) SELECT 1 FROM up WHERE role = 'user' AND id <> ? LIMIT 1""",
            (msg_id, msg_id),
        ).fetchone()
        if earlier_user is None:
            content = conn.execute("SELECT content FROM messages WHERE id = ?", (msg_id,)).fetchone()[0]
            conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (make_title(content), conv_id))

    def get_message(self, message_id: str) -> Message:
        row = self._conn.execute("SELECT conversation_id FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no message with id {message_id!r}")
        return self._messages(row[0], "AND id = ?", (message_id,))[0]

    def _sibling_positions(self, conv_id: str) -> dict[str, tuple[int, int]]:
        """id -> (index among its siblings, number of siblings), from a light id-only query.

        Done in Python: as a window-function CTE joined to the path, SQLite went quadratic.
        """
        groups: dict[str | None, list[str]] = {}
        for mid, parent in self._conn.execute(
            "SELECT id, parent_id FROM messages WHERE conversation_id = ? ORDER BY seq", (conv_id,)
        ):
            groups.setdefault(parent, []).append(mid)
        return {mid: (i, len(members)) for members in groups.values() for i, mid in enumerate(members)}

    def _messages(self, conv_id: str, where: str = "", args: Sequence[Any] = ()) -> list[Message]:
        """Messages of a conversation (``where`` adds conditions), in creation order."""
        with self._read() as conn:
            positions = self._sibling_positions(conv_id)
            rows = conn.execute(
                f"SELECT {_MSG_COLUMNS} FROM messages WHERE conversation_id = ? {where} ORDER BY seq",
                (conv_id, *args),
            ).fetchall()
        return [self._message(r, positions[r[0]]) for r in rows]

    def _message(self, row: Sequence[Any], position: tuple[int, int]) -> Message:
        content, reasoning = row[4], row[5]
        stream = self._streams.get(row[0])
        if stream is not None:  # show what is buffered but not yet committed
            pending_answer, pending_reasoning = stream.pending()
            content += pending_answer
            reasoning += pending_reasoning
        return Message(
            id=row[0],
            conversation_id=row[1],
            parent_id=row[2],
            role=row[3],
            content=content,
            reasoning=reasoning,
            token_ids=_loads_opt(row[6]),
            stats=_loads_opt(row[7]),
            provenance=_loads_opt(row[8]),
            state=row[9],
            created_at=row[10],
            active=bool(row[11]),
            sibling_index=position[0],
            sibling_count=position[1],
        )

    def tree(self, conv_id: str) -> list[Message]:
        """Every message of the conversation, in creation order (parents before children)."""
        with self._read():
            self._require_conversation(conv_id)
            return self._messages(conv_id)

    def active_path(self, conv_id: str) -> list[Message]:
        """The shown transcript: from the active root, following the active child to a leaf."""
        with self._read():
            self._require_conversation(conv_id)
            active = {m.parent_id: m for m in self._messages(conv_id, "AND active = 1")}
        path: list[Message] = []
        node = active.get(None)
        while node is not None and len(path) <= len(active):
            path.append(node)
            node = active.get(node.id)
        return path

    def active_leaf(self, conv_id: str) -> Message | None:
        path = self.active_path(conv_id)
        return path[-1] if path else None

    def siblings(self, message_id: str) -> list[Message]:
        """The alternatives at this point of the tree (the message itself included), oldest first."""
        msg = self.get_message(message_id)
        return self._messages(msg.conversation_id, "AND parent_id IS ?", (msg.parent_id,))

    def children(self, message_id: str | None, conv_id: str | None = None) -> list[Message]:
        """Direct replies to a message (``message_id=None``: the roots of ``conv_id``)."""
        if message_id is None:
            if conv_id is None:
                raise ValueError("children(None) needs conv_id")
            return self._messages(conv_id, "AND parent_id IS NULL")
        msg = self.get_message(message_id)
        return self._messages(msg.conversation_id, "AND parent_id = ?", (message_id,))

    def set_active(self, message_id: str) -> None:
        """Show this branch: make the message and all its ancestors the active ones."""
        with self._write() as conn:
            chain = conn.execute(
                """WITH RECURSIVE up(id, parent_id, conversation_id) AS (
                       SELECT id, parent_id, conversation_id FROM messages WHERE id = ?
                       UNION ALL
                       SELECT m.id, m.parent_id, m.conversation_id
                       FROM messages m JOIN up ON m.id = up.parent_id
                   ) SELECT id, parent_id, conversation_id FROM up""",
                (message_id,),
            ).fetchall()
            if not chain:
                raise NotFoundError(f"no message with id {message_id!r}")
            for mid, parent, conv_id in chain:
                conn.execute(
                    "UPDATE messages SET active = 0 "
                    "WHERE conversation_id = ? AND parent_id IS ? AND active = 1 AND id <> ?",
                    (conv_id, parent, mid),
                )
                conn.execute("UPDATE messages SET active = 1 WHERE id = ?", (mid,))

    def switch_branch(self, message_id: str, offset: int) -> str:
        """Show the sibling ``offset`` places away (e.g. -1 / +1 from the ‹ › buttons); clamps."""
        sibs = self.siblings(message_id)
        index = next(i for i, m in enumerate(sibs) if m.id == message_id)
        target = sibs[max(0, min(len(sibs) - 1, index + offset))].id
        self.set_active(target)
        return target

    # ---- streaming ---------------------------------------------------------------------------

    def begin_stream(
        self,
        conv_id: str,
        parent_id: str | None,
        role: Role = "assistant",
        provenance: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Create the (empty, 'streaming') message row right away and return its id (``message_id`` if given)."""
        start = time.monotonic()
        with self._write():
            msg_id = self._insert_message(
                conv_id,
                parent_id,
                role,
                "",
                "",
                None,
                None,
                provenance,
                "streaming",
                stream_owner=self._sessions.token if self._sessions else None,
                message_id=message_id,
            )
        self._streams[msg_id] = _Stream(conv_id, last_commit=start)
        return msg_id

    def stream_append(self, message_id: str, text_delta: str, channel: Channel = "answer") -> None:
        """Buffer a streamed delta; commit when the last commit was ``flush_interval`` ago.

        A delta is on disk at the latest with the first append or :meth:`flush_due` call made
        ``flush_interval`` after the previous commit, so while tokens flow nothing older than
        about a second can be lost. If tokens may pause, call :meth:`flush_due` from a timer.
        """
        stream = self._stream(message_id)
        if not isinstance(text_delta, str):
            raise ValueError(f"text_delta must be str, not {type(text_delta).__name__}")
        if channel == "answer":
            stream.answer.append(text_delta)
        elif channel == "reasoning":
            stream.reasoning.append(text_delta)
        else:
            raise ValueError(f"channel must be 'answer' or 'reasoning', not {channel!r}")
        now = time.monotonic()
        if now - stream.last_commit >= self.flush_interval:
            self._commit_stream(message_id, stream, now)

    def flush_due(self) -> int:
        """Commit streams whose last commit is ``flush_interval`` old; returns how many."""
        now = time.monotonic()
        due = [
            (mid, s)
            for mid, s in self._streams.items()
            if s.has_pending() and now - s.last_commit >= self.flush_interval
        ]
        for mid, stream in due:
            self._commit_stream(mid, stream, now)
        return len(due)

    def flush(self, message_id: str | None = None) -> None:
        """Commit buffered streamed text now (one stream, or all)."""
        now = time.monotonic()
        ids = [message_id] if message_id is not None else list(self._streams)
        for mid in ids:
            stream = self._stream(mid)
            if stream.has_pending():
                self._commit_stream(mid, stream, now)

    def _commit_stream(self, message_id: str, stream: _Stream, decided_at: float) -> None:
        answer, reasoning = stream.pending()
        with self._write() as conn:
            conn.execute(
                "UPDATE messages SET content = content || ?, reasoning = reasoning || ? WHERE id = ?",
                (answer, reasoning, message_id),
            )
        stream.clear()
        stream.last_commit = decided_at

    def _stream(self, message_id: str) -> _Stream:
        try:
            return self._streams[message_id]
        except KeyError:
            raise ValueError(f"message {message_id!r} is not being streamed by this store") from None

    def finish_stream(
        self,
        message_id: str,
        state: State = "complete",
        *,
        token_ids: Sequence[int] | None = None,
        stats: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        """Commit the rest of the text and the final state, token ids and stats (one transaction).

        ``provenance``, if given, replaces the one passed to :meth:`begin_stream`.
        """
        stream = self._stream(message_id)
        if state not in FINAL_STATES:
            raise ValueError(f"state must be one of {FINAL_STATES}, not {state!r}")
        _check_dict(stats, "stats")
        _check_dict(provenance, "provenance")
        answer, reasoning = stream.pending()
        with self._write() as conn:
            conn.execute(
                "UPDATE messages SET content = content || ?, reasoning = reasoning || ?, state = ?, "
                "token_ids = coalesce(?, token_ids), stats = coalesce(?, stats), "
                "provenance = coalesce(?, provenance), stream_owner = NULL WHERE id = ?",
                (
                    answer,
                    reasoning,
                    state,
                    _encode_token_ids(token_ids),
                    _dumps_opt(None if stats is None else dict(stats), "stats"),
                    _dumps_opt(None if provenance is None else dict(provenance), "provenance"),
                    message_id,
                ),
            )
            conn.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?",
                (time.time(), stream.conversation_id),
            )
        del self._streams[message_id]

    @property
    def streaming_ids(self) -> list[str]:
        """Messages this store is currently streaming."""
        return list(self._streams)

    # ---- duplicate, export, import -----------------------------------------------------------

    def duplicate(self, conv_id: str, title: str | None = None) -> str:
        """Deep copy (whole tree, engine state) under new ids; the copy is not pinned or trashed."""
        self.flush()
        with self._write() as conn:
            row = conn.execute(
                "SELECT title, model_id, model_revision, system_prompt, sampling, folder, "
                "engine_state FROM conversations WHERE id = ?",
                (conv_id,),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no conversation with id {conv_id!r}")
            old_title, model_id, revision, system_prompt, sampling, folder, engine_state = row
            new_conv = _new_id()
            mapping: dict[str, str] = {conv_id: new_conv}
            now = time.time()
            conn.execute(
                "INSERT INTO conversations (id, title, title_is_auto, model_id, model_revision, "
                "system_prompt, sampling, created_at, updated_at, folder) "
                "VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new_conv,
                    title or f"{old_title} (copy)",
                    model_id,
                    revision,
                    system_prompt,
                    sampling,
                    now,
                    now,
                    folder,
                ),
            )
            rows = conn.execute(
                "SELECT id, parent_id, role, content, reasoning, token_ids, stats, provenance, "
                "state, created_at, active FROM messages WHERE conversation_id = ? ORDER BY seq",
                (conv_id,),
            ).fetchall()
            for r in rows:
                mapping[r[0]] = _new_id()
            conn.executemany(
                "INSERT INTO messages (id, conversation_id, parent_id, role, content, reasoning, "
                "token_ids, stats, provenance, state, created_at, active) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        mapping[r[0]],
                        new_conv,
                        None if r[1] is None else mapping[r[1]],
                        *r[2:8],
                        "interrupted" if r[8] == "streaming" else r[8],
                        r[9],
                        r[10],
                    )
                    for r in rows
                ],
            )
            if engine_state is not None:
                remapped = _remap_ids(json.loads(engine_state), mapping)
                conn.execute(
                    "UPDATE conversations SET engine_state = ? WHERE id = ?",
                    (_dumps(remapped, "engine_state"), new_conv),
                )
        return new_conv

    def export_dict(self, conv_id: str) -> dict[str, Any]:
        """The conversation in the versioned export format of :mod:`olmo3.export` (whole tree)."""
        from olmo3 import export

        with self._read():
            conv = self.get_conversation(conv_id)
            engine_state = self.get_engine_state(conv_id)
            messages = self._messages(conv_id)
        return {
            "format": export.FORMAT,
            "version": export.VERSION,
            "id": conv.id,
            "title": conv.title,
            "title_is_auto": conv.title_is_auto,
            "model_id": conv.model_id,
            "model_revision": conv.model_revision,
            "system_prompt": conv.system_prompt,
            "sampling": conv.sampling,
            "created_at": export.ts_to_iso(conv.created_at),
            "updated_at": export.ts_to_iso(conv.updated_at),
            "pinned": conv.pinned,
            "folder": conv.folder,
            "engine_state": engine_state,
            "messages": [
                {
                    "id": m.id,
                    "parent_id": m.parent_id,
                    "role": m.role,
                    "content": m.content,
                    "reasoning": m.reasoning,
                    "token_ids": m.token_ids,
                    "stats": m.stats,
                    "provenance": m.provenance,
                    "state": m.state,
                    "created_at": export.ts_to_iso(m.created_at),
                    "active": m.active,
                }
                for m in messages
            ],
        }

    def import_conversation(self, conv_dict: Mapping[str, Any]) -> str:
        """Import an exported conversation under new ids, in one transaction; returns its id.

        The dict is validated first (``ValueError`` naming the problem); on any error nothing
        is written. A message exported mid-stream comes back as 'interrupted'.
        """
        from olmo3 import export

        data = export.validate_conversation(conv_dict)
        new_conv = _new_id()
        mapping: dict[str, str] = {data["id"]: new_conv}
        for m in data["messages"]:
            mapping[m["id"]] = _new_id()
        engine_state = data["engine_state"]
        with self._write() as conn:
            conn.execute(
                "INSERT INTO conversations (id, title, title_is_auto, model_id, model_revision, "
                "system_prompt, sampling, created_at, updated_at, pinned, folder, engine_state) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new_conv,
                    data["title"],
                    int(data["title_is_auto"]),
                    data["model_id"],
                    data["model_revision"],
                    data["system_prompt"],
                    _dumps(data["sampling"], "sampling"),
                    export.iso_to_ts(data["created_at"]),
                    export.iso_to_ts(data["updated_at"]),
                    int(data["pinned"]),
                    data["folder"],
                    None if engine_state is None else _dumps(_remap_ids(engine_state, mapping), "engine_state"),
                ),
            )
            conn.executemany(
                "INSERT INTO messages (id, conversation_id, parent_id, role, content, reasoning, "
                "token_ids, stats, provenance, state, created_at, active) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        mapping[m["id"]],
                        new_conv,
                        None if m["parent_id"] is None else mapping[m["parent_id"]],
                        m["role"],
                        m["content"],
                        m["reasoning"],
                        _encode_token_ids(m["token_ids"]),
                        _dumps_opt(m["stats"], "stats"),
                        _dumps_opt(m["provenance"], "provenance"),
                        "interrupted" if m["state"] == "streaming" else m["state"],
                        export.iso_to_ts(m["created_at"]),
                        int(m["active"]),
                    )
                    for m in export.parents_first(data["messages"])
                ],
            )
        return new_conv

    # ---- search ------------------------------------------------------------------------------

    def search(self, query: str, limit: int = 50) -> list[SearchHit]:
        """Full-text search over titles, messages and reasoning of conversations not in the trash.

        Conversations whose title matches come first, then matching messages; each group is
        ranked by BM25 (reasoning counts half as much as the answer). Diacritics and case
        are ignored, the last term matches as a prefix (as-you-type), FTS syntax is plain text.
        """
        fts = build_fts_query(query)
        if fts is None or limit <= 0:
            return []
        marks = (MATCH_START, MATCH_END)
        with self._read() as conn:
            title_rows = conn.execute(
                """SELECT c.id, NULL, c.title,
                          highlight(conversations_fts, 0, ?, ?), bm25(conversations_fts)
                   FROM conversations_fts JOIN conversations c ON c.seq = conversations_fts.rowid
                   WHERE conversations_fts MATCH ? AND c.deleted_at IS NULL
                   ORDER BY 5 LIMIT ?""",
                (*marks, fts, limit),
            ).fetchall()
            message_rows = conn.execute(
                """SELECT m.conversation_id, m.id, c.title,
                          snippet(messages_fts, -1, ?, ?, '…', 16), bm25(messages_fts, 1.0, 0.5)
                   FROM messages_fts
                   JOIN messages m ON m.seq = messages_fts.rowid
                   JOIN conversations c ON c.id = m.conversation_id
                   WHERE messages_fts MATCH ? AND c.deleted_at IS NULL
                   ORDER BY 5 LIMIT ?""",
                (*marks, fts, limit),
            ).fetchall()
        # BM25 scores of the two tables are not on one scale (a handful of short titles gets
        # near-zero IDF), so title hits come first, then message hits, each best-first.
        hits = [SearchHit(*row) for row in title_rows + message_rows]
        return hits[:limit]


def _clean_folder(folder: str | None) -> str | None:
    if folder is None:
        return None
    if not isinstance(folder, str):
        raise ValueError(f"folder must be a str or None, not {type(folder).__name__}")
    name = " ".join(folder.split())
    return name or None


def _conversation(row: Sequence[Any]) -> Conversation:
    return Conversation(
        id=row[0],
        title=row[1],
        title_is_auto=bool(row[2]),
        model_id=row[3],
        model_revision=row[4],
        system_prompt=row[5],
        sampling=json.loads(row[6]),
        created_at=row[7],
        updated_at=row[8],
        pinned=bool(row[9]),
        folder=row[10],
        deleted_at=row[11],
    )
