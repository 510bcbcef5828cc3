"""The store core: opening, configuring and migrating the file, transactions, conversations and the trash.

:class:`ConversationStore` puts the parts together: the message tree (:mod:`.messages`), streaming
(:mod:`.streaming`), search (:mod:`.search`), export, import and duplicate (:mod:`.interchange`) and attached
documents (:mod:`.attachments`) are mixins.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Final

from olmo3.ids import new_id

from ..appinfo import conversation_db_path as default_db_path
from .attachments import AttachmentsMixin
from .health import APPLICATION_ID, damaged_message, preflight
from .interchange import InterchangeMixin
from .messages import MessagesMixin
from .records import (
    DEFAULT_TITLE,
    Conversation,
    DamagedStoreError,
    NotFoundError,
    StoreError,
    check_dict,
    dump_json,
    dump_json_opt,
    load_json_opt,
    make_title,
)
from .schema import CURRENT_VERSION, MIGRATIONS
from .search import SearchMixin
from .streaming import FLUSH_INTERVAL_S, Sessions, Stream, StreamingMixin

__all__ = ["TRASH_RETENTION_DAYS", "ConversationStore"]

TRASH_RETENTION_DAYS: Final = 30.0

_CONV_COLUMNS = (
    "id, title, title_is_auto, model_id, model_revision, system_prompt, sampling, "
    "created_at, updated_at, pinned, folder, deleted_at"
)

_UNSET: Any = object()


class ConversationStore(MessagesMixin, StreamingMixin, SearchMixin, InterchangeMixin, AttachmentsMixin):
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
        self._streams: dict[str, Stream] = {}
        self._tx_depth = 0
        self._tx_writes = False
        self._sessions: Sessions | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Reads only: a refused or damaged file stays byte-identical, with no -wal/-shm/-sessions beside it.
        preflight(self.path)
        self._conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            self._configure()
            self._migrate()
            self._sessions = Sessions(self.path)
            self._recover_streams()
            if trash_retention_days is not None:
                self.purge_trash(trash_retention_days)
        except BaseException as exc:
            self._conn.close()
            if self._sessions is not None:
                self._sessions.close()
                with suppress(OSError):  # ours, if no other session has a lock file in it
                    self._sessions.dir.rmdir()
            if isinstance(exc, sqlite3.DatabaseError):  # damage quick_check could not see
                text = str(exc)
                if "malformed" in text or "corrupt" in text:
                    raise DamagedStoreError(damaged_message(self.path, text)) from exc
                raise StoreError(f"{self.path}: {text}") from exc
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
            if conn.execute("PRAGMA application_id").fetchone()[0] == 0:  # a store from before the id was set
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
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
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
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

    def close(self) -> None:
        """Commit pending streamed text, finish open streams as 'interrupted', close the file."""
        if self._conn is None:  # closed already (close() drops the connection)
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
        check_dict(sampling, "sampling")
        now = time.time()
        conv_id = new_id()
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
                    dump_json(dict(sampling or {}), "sampling"),
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
            args.append(dump_json(dict(sampling), "sampling"))
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
        check_dict(state, "engine_state")
        text = dump_json_opt(None if state is None else dict(state), "engine_state")
        self._update_conversation(conv_id, "engine_state = ?", (text,))

    def get_engine_state(self, conv_id: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT engine_state FROM conversations WHERE id = ?", (conv_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no conversation with id {conv_id!r}")
        state: dict[str, Any] | None = load_json_opt(row[0])  # always a JSON object: set_engine_state checks
        return state

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
