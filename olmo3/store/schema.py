"""The store's schema: an explicit list of migrations, versioned with ``PRAGMA user_version``.

Never edit a shipped migration; add a new one instead (tests/store keeps frozen copies of every shipped version
and fails if these drift). Applying the migrations, with a ``.vN.bak`` copy first, is the store's job
(:meth:`olmo3.store.ConversationStore._migrate`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["CURRENT_VERSION", "MIGRATIONS", "Migration"]

_FTS_TOKENIZE = "tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3'"

# Version 1: the first schema.
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


# Version 4: attached documents (olmo3.docs): the extracted text, its passages and their FTS5 (BM25) index.
# olmo3.docs.index.STORE_MIGRATION copied literally (and frozen here: that constant may change, this may not).
# Deleting a conversation cascades to its attachments; a trigger (and the foreign key) takes their passages,
# and the FTS triggers their index entries.
_V4: Final[tuple[str, ...]] = (
    """CREATE TABLE IF NOT EXISTS attachments (
            id INTEGER PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            message_id TEXT,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            encoding TEXT,
            page_count INTEGER NOT NULL,
            pages TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            warnings TEXT NOT NULL DEFAULT '[]',
            created_at REAL NOT NULL
        )""",
    "CREATE INDEX IF NOT EXISTS attachments_by_conversation ON attachments(conversation_id, id)",
    """CREATE TABLE IF NOT EXISTS passages (
            id INTEGER PRIMARY KEY,
            attachment_id INTEGER NOT NULL REFERENCES attachments(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            page_start INTEGER NOT NULL,
            page_end INTEGER NOT NULL,
            tokens INTEGER NOT NULL,
            text TEXT NOT NULL,
            UNIQUE (attachment_id, ordinal)
        )""",
    """CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(
            text, content = 'passages', content_rowid = 'id', tokenize = 'porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER IF NOT EXISTS passages_fts_insert AFTER INSERT ON passages BEGIN
            INSERT INTO passages_fts(rowid, text) VALUES (new.id, new.text);
        END""",
    """CREATE TRIGGER IF NOT EXISTS passages_fts_delete AFTER DELETE ON passages BEGIN
            INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END""",
    """CREATE TRIGGER IF NOT EXISTS passages_fts_update AFTER UPDATE OF text ON passages BEGIN
            INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', old.id, old.text);
            INSERT INTO passages_fts(rowid, text) VALUES (new.id, new.text);
        END""",
    """CREATE TRIGGER IF NOT EXISTS attachments_delete_passages AFTER DELETE ON attachments BEGIN
            DELETE FROM passages WHERE attachment_id = old.id;
        END""",
)


# Version 5: tool turns. Messages may have the role 'environment' (a tool's result, the turn Olmo-3's template
# writes after an assistant message with function calls) and a `tool` column: JSON with an assistant's calls or an
# environment turn's call and result; `tool_text` is its searchable text (the calls as written, the tool's name).
# SQLite cannot change a CHECK constraint in place, so the table is rebuilt (same rows, same seq, so the FTS rowids
# hold), its new self-reference named after the new table (RENAME rewrites it), and the search index gets a third
# column. The old table's triggers and indexes go and are made again.
_MESSAGES_V5 = """CREATE TABLE messages_v5 (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        parent_id TEXT REFERENCES messages_v5(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'environment')),
        content TEXT NOT NULL DEFAULT '',
        reasoning TEXT NOT NULL DEFAULT '',
        token_ids TEXT,
        stats TEXT,
        state TEXT NOT NULL DEFAULT 'complete'
            CHECK (state IN ('streaming', 'complete', 'interrupted', 'error')),
        created_at REAL NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        provenance TEXT,
        stream_owner TEXT,
        tool TEXT,
        tool_text TEXT NOT NULL DEFAULT ''
    )"""
_V4_MESSAGE_COLUMNS = (
    "seq, id, conversation_id, parent_id, role, content, reasoning, token_ids, stats, state, created_at, active, "
    "provenance, stream_owner"
)
_V5: Final[tuple[str, ...]] = (
    _MESSAGES_V5,
    f"INSERT INTO messages_v5 ({_V4_MESSAGE_COLUMNS}) SELECT {_V4_MESSAGE_COLUMNS} FROM messages",
    # Triggers first: with them, the implicit DELETE of DROP TABLE fails ("database table is locked").
    "DROP TRIGGER messages_fts_insert",
    "DROP TRIGGER messages_fts_delete",
    "DROP TRIGGER messages_fts_update",
    "DROP TABLE messages",
    "DROP TABLE messages_fts",
    "ALTER TABLE messages_v5 RENAME TO messages",
    "CREATE INDEX messages_by_conversation ON messages(conversation_id, seq)",
    "CREATE INDEX messages_by_parent ON messages(parent_id)",
    """CREATE UNIQUE INDEX messages_one_active_child
        ON messages(conversation_id, ifnull(parent_id, '')) WHERE active = 1""",
    f"""CREATE VIRTUAL TABLE messages_fts USING fts5(
        content, reasoning, tool_text, content = 'messages', content_rowid = 'seq', {_FTS_TOKENIZE})""",
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content, reasoning, tool_text)
            VALUES (new.seq, new.content, new.reasoning, new.tool_text);
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content, reasoning, tool_text)
            VALUES ('delete', old.seq, old.content, old.reasoning, old.tool_text);
    END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, reasoning, tool_text ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content, reasoning, tool_text)
            VALUES ('delete', old.seq, old.content, old.reasoning, old.tool_text);
        INSERT INTO messages_fts(rowid, content, reasoning, tool_text)
            VALUES (new.seq, new.content, new.reasoning, new.tool_text);
    END""",
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
    Migration(4, "attached documents: text, passages, FTS5 index", _statements(_V4)),
    Migration(5, "tool turns: the environment role, tool data, searchable calls", _statements(_V5)),
)
CURRENT_VERSION: Final = MIGRATIONS[-1].version
