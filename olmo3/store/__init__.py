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

The parts: ``schema`` (migrations), ``records`` (value objects, errors, pure helpers), ``paths`` (the default
file), ``health`` (the read-only checks before a file is opened for writing), ``salvage`` (a row-by-row copy
out of a damaged file), ``db`` (:class:`ConversationStore`: opening, migrating, transactions, conversations,
trash), ``messages`` (the message tree), ``streaming`` (streams and their owners), ``search`` (FTS5),
``interchange`` (export, import, duplicate), ``validation`` (what an import must pass) and ``attachments``
(attached documents: :mod:`olmo3.docs`'s tables in the store).

This package must stay Qt-free (the CLI uses it too) and never imports ``olmo3.model``, ``olmo3.chat`` or
``olmo3.hub`` (``olmo3.docs`` is fine: it is Qt-, MLX- and model-free too).
"""

from __future__ import annotations

from ..appinfo import APP_NAME, DB_FILENAME
from ..appinfo import conversation_db_path as default_db_path
from .db import TRASH_RETENTION_DAYS, ConversationStore
from .records import (
    DEFAULT_TITLE,
    FINAL_STATES,
    ROLES,
    STATES,
    TITLE_LIMIT,
    Channel,
    Conversation,
    DamagedStoreError,
    Message,
    NewerStoreError,
    NotAStoreError,
    NotFoundError,
    Role,
    SearchHit,
    State,
    StoreError,
    make_title,
)
from .schema import CURRENT_VERSION, MIGRATIONS, Migration
from .search import MATCH_END, MATCH_START, build_fts_query, snippet_to_html
from .streaming import FLUSH_INTERVAL_S

__all__ = [
    "APP_NAME",
    "CURRENT_VERSION",
    "DB_FILENAME",
    "DEFAULT_TITLE",
    "FINAL_STATES",
    "FLUSH_INTERVAL_S",
    "MATCH_END",
    "MATCH_START",
    "MIGRATIONS",
    "ROLES",
    "STATES",
    "TITLE_LIMIT",
    "TRASH_RETENTION_DAYS",
    "Channel",
    "Conversation",
    "ConversationStore",
    "DamagedStoreError",
    "Message",
    "Migration",
    "NewerStoreError",
    "NotAStoreError",
    "NotFoundError",
    "Role",
    "SearchHit",
    "State",
    "StoreError",
    "build_fts_query",
    "default_db_path",
    "make_title",
    "snippet_to_html",
]
