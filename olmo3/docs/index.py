"""Attachments and their passages in SQLite, with an FTS5 (BM25) index, keyed by conversation.

Why it looks the way it does:

* The extracted text lives in the database, not in a path: the chat must keep working after the original
  file is moved or deleted, and deleting the conversation must delete the text with it.
* This is plain SQL over a :class:`sqlite3.Connection` so that the conversation store (``olmo3/store``) can
  adopt it as one more migration. Until then :data:`SCHEMA` is self-contained and idempotent
  (``IF NOT EXISTS`` everywhere): :func:`ensure_schema` may run on every open.
* Passages go in an *external-content* FTS5 table kept in sync by triggers (as the store's message search
  does), so the text is stored once. Deleting an attachment deletes its passages through a trigger, which
  works whether or not ``PRAGMA foreign_keys`` is on; in the store, ``ON DELETE CASCADE`` from
  ``conversations`` deletes the attachments, and that trigger and the FTS triggers do the rest.
* The tokenizer is ``porter unicode61 remove_diacritics 2``: questions rarely use the document's exact word
  forms ("planted" vs "plant"), and accents should not decide a match.
* What a person types is never FTS5 syntax: :func:`build_match_query` keeps only word characters, quotes
  every term, drops stopwords and ORs the rest, so :func:`search` cannot raise on any input (the tests fuzz
  it) and BM25 ranks passages by how many rare terms they share with the question. Terms in half of all
  passages or more are left out of the query (BM25 weighs them ~0 anyway; scoring them is most of the
  cost), and BM25's best candidates are re-ranked by term proximity (:mod:`olmo3.docs.rerank`).
* Every function that writes is atomic (a savepoint): outside a transaction it commits, inside the caller's
  transaction it becomes part of it.

Store migration (what ``olmo3/store`` must add as its next ``Migration``): the statements of
:data:`STORE_MIGRATION`, copied literally into the store's migration list and frozen there as the store's
rules require. They are :data:`SCHEMA` with ``attachments.conversation_id`` referencing
``conversations(id) ON DELETE CASCADE``, so a conversation delete (or the trash purge) removes its
attachments, passages and index entries in the same transaction. The store then only needs to call
:func:`add_document`, :func:`search` and friends on its own connection (inside its write transaction);
:func:`delete_for_conversation` stays useful for databases without the foreign key (the standalone schema).
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, cast

from .chunk import Passage, approx_tokens, page_label
from .extract import Document, Kind, Page
from .rerank import proximity, term_key

__all__ = [
    "SCHEMA",
    "STOPWORDS",
    "STORE_MIGRATION",
    "Attachment",
    "Hit",
    "add_document",
    "build_match_query",
    "delete_attachment",
    "delete_for_conversation",
    "ensure_schema",
    "first_passages",
    "list_attachments",
    "load_document",
    "query_terms",
    "search",
]


def _words(text: str) -> frozenset[str]:
    """A set of words written as one string (easier to read and edit than a list of quoted words)."""
    return frozenset(text.split())


_TOKENIZE: Final = "tokenize = 'porter unicode61 remove_diacritics 2'"


def _schema(conversation_fk: bool) -> tuple[str, ...]:
    conversation = "TEXT NOT NULL" + (" REFERENCES conversations(id) ON DELETE CASCADE" if conversation_fk else "")
    return (
        f"""CREATE TABLE IF NOT EXISTS attachments (
            id INTEGER PRIMARY KEY,
            conversation_id {conversation},
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
        f"""CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(
            text, content = 'passages', content_rowid = 'id', {_TOKENIZE})""",
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


SCHEMA: Final[tuple[str, ...]] = _schema(conversation_fk=False)
"""Standalone schema (no ``conversations`` table needed); idempotent."""

STORE_MIGRATION: Final[tuple[str, ...]] = _schema(conversation_fk=True)
"""The same schema for the conversation store: attachments cascade-delete with their conversation."""

# Words that carry no topic: dropping them keeps BM25 on the words that do (English only, for now).
STOPWORDS: Final = _words(
    "a about above after again against all am an and any are aren as at be because been before being below "
    "between both but by can cannot could couldn did didn do does doesn doing don down during each few for from "
    "further had hadn has hasn have haven having he her here hers herself him himself his how i if in into is isn "
    "it its itself just let me more most my myself no nor not now of off on once only or other ought our ours "
    "ourselves out over own please same shan she should shouldn so some such tell than that the their theirs them "
    "themselves then there these they this those through to too under until up very was wasn we were weren what "
    "when where which while who whom why will with won would wouldn you your yours yourself yourselves also say "
    "says said according document file text page pages"
)
MAX_TERMS: Final = 32
CANDIDATES_PER_RESULT: Final = 4
MAX_K: Final = 200
_WORD: Final = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Hit:
    """A passage that matched a query: which file, which pages, the text, and its BM25 score (higher is better)."""

    attachment_id: int
    name: str
    ordinal: int
    page_start: int
    page_end: int
    text: str
    tokens: int
    score: float

    @property
    def page_label(self) -> str:
        return page_label(self.page_start, self.page_end)


@dataclass(frozen=True)
class Attachment:
    """One attached document as the conversation knows it (everything a chip or an export shows)."""

    id: int
    conversation_id: str
    message_id: str | None
    name: str
    kind: Kind
    size: int
    sha256: str
    page_count: int
    tokens: int
    passage_count: int
    created_at: float


@contextmanager
def _atomic(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("SAVEPOINT olmo3_docs")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK TO olmo3_docs")
        conn.execute("RELEASE olmo3_docs")
        raise
    conn.execute("RELEASE olmo3_docs")


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, index and triggers of :data:`SCHEMA` where they are missing."""
    with _atomic(conn):
        for statement in SCHEMA:
            conn.execute(statement)


def add_document(
    conn: sqlite3.Connection,
    conv_id: str,
    doc: Document,
    passages: Sequence[Passage],
    *,
    tokens: int | None = None,
    message_id: str | None = None,
) -> int:
    """Store ``doc``'s text and index ``passages`` for conversation ``conv_id``; returns the attachment id.

    ``tokens`` is the whole text's token count by the model's tokenizer (default: :func:`approx_tokens`).
    Index the passages even when the document first goes into a turn whole: a later turn, with less context
    left, may need to retrieve from it instead.
    """
    pages = json.dumps([[p.number, p.text] for p in doc.pages], ensure_ascii=False)
    with _atomic(conn):
        cur = conn.execute(
            """INSERT INTO attachments (conversation_id, message_id, name, kind, size_bytes, sha256, encoding,
                   page_count, pages, tokens, warnings, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                conv_id,
                message_id,
                doc.name,
                doc.kind,
                doc.size,
                doc.sha256,
                doc.encoding,
                doc.page_count,
                pages,
                approx_tokens(doc.text) if tokens is None else tokens,
                json.dumps(list(doc.warnings), ensure_ascii=False),
                time.time(),
            ),
        )
        attachment_id = cast(int, cur.lastrowid)
        conn.executemany(
            """INSERT INTO passages (attachment_id, ordinal, page_start, page_end, tokens, text)
               VALUES (?, ?, ?, ?, ?, ?)""",
            [(attachment_id, p.ordinal, p.page_start, p.page_end, p.tokens, p.text) for p in passages],
        )
    return attachment_id


def query_terms(text: str) -> list[str]:
    """The searchable words of free text: letters and digits only, lowercased, no stopwords, no repeats."""
    terms: list[str] = []
    for word in _WORD.findall(unicodedata.normalize("NFKC", text).lower()):
        if word in STOPWORDS or (len(word) == 1 and word.isascii() and not word.isdigit()) or word in terms:
            continue
        terms.append(word)
        if len(terms) == MAX_TERMS:
            break
    return terms


def _or(terms: Sequence[str]) -> str:
    return " OR ".join(f'"{t}"' for t in terms)  # word characters only: no quote to escape


def build_match_query(text: str) -> str | None:
    """A safe FTS5 query for free text: quoted word terms, stopwords dropped, ORed; None when nothing is left."""
    terms = query_terms(text)
    return _or(terms) if terms else None


def _informative(conn: sqlite3.Connection, terms: Sequence[str]) -> dict[str, float]:
    """The terms that can change a BM25 ranking, with their IDF: those in fewer than half of all passages.

    FTS5's bm25() gives a term in at least half of the rows an IDF of 1e-6, so it adds nothing to a score,
    yet scoring it costs time in every row it occurs in (most of a search's time, on large indexes).
    Counting a term's rows is cheap. When every term is that common, the rarest three are kept.
    """
    total = conn.execute("SELECT count(*) FROM passages").fetchone()[0]
    counts = [
        (conn.execute("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH ?", (_or([t]),)).fetchone()[0], t)
        for t in terms
    ]
    kept = [(n, t) for n, t in counts if 0 < n < total / 2] or [(n, t) for n, t in sorted(counts)[:3] if n > 0]
    return {t: max(1e-6, math.log((total - n + 0.5) / (n + 0.5))) for n, t in kept}  # FTS5's bm25 IDF


def search(
    conn: sqlite3.Connection,
    conv_id: str,
    query: str,
    k: int = 5,
    *,
    attachment_ids: Sequence[int] | None = None,
) -> list[Hit]:
    """The ``k`` passages of the conversation's attachments that best match ``query``, best first.

    The score is BM25 plus a proximity bonus (:mod:`olmo3.docs.rerank`) computed over BM25's best
    :data:`CANDIDATES_PER_RESULT` × ``k`` passages. Never raises on what a person typed: an empty,
    all-stopword or punctuation-only query finds nothing. ``attachment_ids`` restricts the search to some
    attachments (those the turn retrieves from).
    """
    k = min(int(k), MAX_K)
    if k <= 0 or (attachment_ids is not None and not attachment_ids):
        return []
    idf = _informative(conn, query_terms(query))
    if not idf:
        return []
    match = _or(list(idf))
    # Rank first, carrying only ids (a sort that carried every matching passage's text would read megabytes),
    # then fetch the few winners' text.
    ranked = """SELECT p.id AS id, bm25(passages_fts) AS rank
                FROM passages_fts
                JOIN passages p ON p.id = passages_fts.rowid
                JOIN attachments a ON a.id = p.attachment_id
                WHERE passages_fts MATCH ? AND a.conversation_id = ?"""
    params: list[object] = [match, conv_id]
    if attachment_ids is not None:
        ranked += f" AND a.id IN ({','.join('?' * len(attachment_ids))})"
        params.extend(int(i) for i in attachment_ids)
    ranked += " ORDER BY rank, p.id LIMIT ?"
    params.append(k * CANDIDATES_PER_RESULT)
    sql = f"""SELECT a.id, a.name, p.ordinal, p.page_start, p.page_end, p.text, p.tokens, r.rank
              FROM ({ranked}) r
              JOIN passages p ON p.id = r.id
              JOIN attachments a ON a.id = p.attachment_id
              ORDER BY r.rank, p.id"""
    weights: dict[str, float] = {}
    for term, value in idf.items():
        key = term_key(term)
        weights[key] = max(weights.get(key, 0.0), value)
    hits = [
        Hit(r[0], r[1], r[2], r[3], r[4], r[5], r[6], -float(r[7]) + proximity(r[5], weights))
        for r in conn.execute(sql, params)
    ]
    hits.sort(key=lambda h: -h.score)  # stable: BM25's order breaks ties
    return hits[:k]


def first_passages(conn: sqlite3.Connection, attachment_id: int, n: int) -> list[Hit]:
    """The first ``n`` passages of an attachment (for a question that matches nothing, such as "summarize")."""
    rows = conn.execute(
        """SELECT a.id, a.name, p.ordinal, p.page_start, p.page_end, p.text, p.tokens
           FROM passages p JOIN attachments a ON a.id = p.attachment_id
           WHERE a.id = ? ORDER BY p.ordinal LIMIT ?""",
        (attachment_id, max(0, n)),
    )
    return [Hit(r[0], r[1], r[2], r[3], r[4], r[5], r[6], 0.0) for r in rows]


def list_attachments(conn: sqlite3.Connection, conv_id: str) -> list[Attachment]:
    """The conversation's attachments in the order they were added."""
    rows = conn.execute(
        """SELECT a.id, a.conversation_id, a.message_id, a.name, a.kind, a.size_bytes, a.sha256, a.page_count,
                  a.tokens, (SELECT count(*) FROM passages p WHERE p.attachment_id = a.id), a.created_at
           FROM attachments a WHERE a.conversation_id = ? ORDER BY a.id""",
        (conv_id,),
    )
    return [Attachment(*row) for row in rows]


def load_document(conn: sqlite3.Connection, attachment_id: int) -> Document:
    """The stored :class:`Document` (the original file is not needed, and not looked at)."""
    row = conn.execute(
        "SELECT name, kind, size_bytes, sha256, pages, encoding, warnings FROM attachments WHERE id = ?",
        (attachment_id,),
    ).fetchone()
    if row is None:
        raise LookupError(f"no attachment {attachment_id}")
    name, kind, size, sha256, pages, encoding, warnings = row
    return Document(
        name=name,
        kind=kind,
        size=size,
        sha256=sha256,
        pages=tuple(Page(int(n), str(t)) for n, t in json.loads(pages)),
        encoding=encoding,
        warnings=tuple(json.loads(warnings)),
    )


def delete_attachment(conn: sqlite3.Connection, attachment_id: int) -> None:
    """Remove one attachment, its passages and their index entries."""
    with _atomic(conn):
        conn.execute("DELETE FROM attachments WHERE id = ?", (attachment_id,))


def delete_for_conversation(conn: sqlite3.Connection, conv_id: str) -> int:
    """Remove every attachment of a conversation (with passages and index entries); returns how many."""
    with _atomic(conn):
        return conn.execute("DELETE FROM attachments WHERE conversation_id = ?", (conv_id,)).rowcount
