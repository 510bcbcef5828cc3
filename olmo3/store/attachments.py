"""Attached documents in the conversation store: their rows, a turn's plan, and their part of export and import.

The tables are :mod:`olmo3.docs.index`'s (schema version 4), keyed by conversation: ``ON DELETE CASCADE`` takes a
conversation's attachments, passages and index entries with it when it is deleted for good (the Trash keeps them).
An attachment whose ``message_id`` is NULL is *pending*: attached in the composer, not sent yet (it comes back as a
chip when the conversation is opened again); sending binds it to the user message it came with.

Which documents a turn used, and which passages, is recorded on the user message's provenance
(:func:`olmo3.docs.turn.to_provenance`); the search over messages (:mod:`.search`) never sees document text.

Indexing a long document takes a while (about a third of a second for 300 pages), so the app does it on its chores
thread with :func:`index_document`, on a connection of its own; everything else here runs on the store's thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from olmo3.docs import index
from olmo3.docs.chunk import Passage
from olmo3.docs.extract import Document
from olmo3.docs.index import Attachment
from olmo3.docs.turn import PROVENANCE_KEY, Prepared, TurnPlan, plan_turn

from .records import NotFoundError

__all__ = [
    "ATTACHMENT_FIELDS",
    "AttachmentsMixin",
    "check_provenance_refs",
    "duplicate_attachments",
    "export_attachments",
    "import_attachments",
    "index_document",
    "remap_provenance",
    "validate_attachments",
]

KINDS: Final = ("text", "markdown", "code", "html", "pdf", "docx")
ATTACHMENT_FIELDS: Final = (
    "id",
    "message_id",
    "name",
    "kind",
    "size",
    "sha256",
    "encoding",
    "pages",
    "tokens",
    "warnings",
    "created_at",
    "passages",
)
_PASSAGE_FIELDS: Final = ("ordinal", "page_start", "page_end", "tokens", "text")


def _conversation_exists(conn: sqlite3.Connection, conv_id: str) -> None:
    if conn.execute("SELECT 1 FROM conversations WHERE id = ?", (conv_id,)).fetchone() is None:
        raise NotFoundError(f"no conversation with id {conv_id!r}")


def index_document(
    path: str | Path, conv_id: str, prepared: Prepared, *, message_id: str | None = None, timeout: float = 10.0
) -> int:
    """Index ``prepared`` for conversation ``conv_id`` in the store file at ``path``, on a connection of its own
    (any thread; the store's WAL lets the GUI read meanwhile). Returns the attachment id; writes nothing on error."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            _conversation_exists(conn, conv_id)
            attachment_id = index.add_document(
                conn, conv_id, prepared.doc, prepared.passages, tokens=prepared.tokens, message_id=message_id
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return attachment_id
    finally:
        conn.close()


class AttachmentsMixin:
    """Attachments of :class:`olmo3.store.ConversationStore` (see the module docstring)."""

    _conn: sqlite3.Connection

    if TYPE_CHECKING:

        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _require_conversation(self, conv_id: str) -> None: ...

    def add_attachment(
        self,
        conv_id: str,
        doc: Document,
        passages: Sequence[Passage],
        *,
        tokens: int | None = None,
        message_id: str | None = None,
    ) -> int:
        """Keep ``doc``'s text and index its passages for ``conv_id`` on the store's own thread; returns its id."""
        with self._write() as conn:
            self._require_conversation(conv_id)
            return index.add_document(conn, conv_id, doc, passages, tokens=tokens, message_id=message_id)

    def attachments(self, conv_id: str, *, pending: bool | None = None) -> list[Attachment]:
        """The conversation's attachments in the order they were added (``pending``: only unsent / only sent)."""
        found = index.list_attachments(self._conn, conv_id)
        if pending is None:
            return found
        return [a for a in found if (a.message_id is None) == pending]

    def get_attachment(self, attachment_id: int) -> Attachment:
        row = self._conn.execute("SELECT conversation_id FROM attachments WHERE id = ?", (attachment_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no attachment {attachment_id}")
        return next(a for a in self.attachments(row[0]) if a.id == attachment_id)

    def attachment_document(self, attachment_id: int) -> Document:
        """The stored text of an attachment (the original file is never needed)."""
        try:
            return index.load_document(self._conn, attachment_id)
        except LookupError:
            raise NotFoundError(f"no attachment {attachment_id}") from None

    def bind_attachments(self, attachment_ids: Collection[int], message_id: str) -> None:
        """Pending attachments were sent with ``message_id``: they are no longer the composer's."""
        if not attachment_ids:
            return
        with self._write() as conn:
            marks = ",".join("?" * len(attachment_ids))
            conn.execute(
                f"UPDATE attachments SET message_id = ? WHERE message_id IS NULL AND id IN ({marks})",
                (message_id, *(int(i) for i in attachment_ids)),
            )

    def remove_attachment(self, attachment_id: int) -> None:
        """Remove an attachment with its passages and index entries (a chip removed before sending)."""
        with self._write() as conn:
            index.delete_attachment(conn, attachment_id)

    def plan_turn(
        self,
        conv_id: str,
        message: str,
        attachment_ids: Sequence[int],
        *,
        remaining_context: int,
        in_transcript: Collection[int] = (),
        count_tokens: Any = None,
    ) -> TurnPlan:
        """:func:`olmo3.docs.turn.plan_turn` on the store's connection, in one read snapshot (milliseconds)."""
        with self._read() as conn:
            kwargs: dict[str, Any] = {"remaining_context": remaining_context, "in_transcript": in_transcript}
            if count_tokens is not None:
                kwargs["count_tokens"] = count_tokens
            return plan_turn(conn, conv_id, message, attachment_ids, **kwargs)


# ------------------------------------------------------------------------------------------------------------
# Export, import and duplicate (called by .interchange inside its own transaction)
# ------------------------------------------------------------------------------------------------------------


def export_attachments(conn: sqlite3.Connection, conv_id: str, ts_to_iso: Any) -> list[dict[str, Any]]:
    """Every attachment of the conversation in full: its text by page and its passages (the JSON export)."""
    out: list[dict[str, Any]] = []
    rows = conn.execute(
        """SELECT id, message_id, name, kind, size_bytes, sha256, encoding, pages, tokens, warnings, created_at
           FROM attachments WHERE conversation_id = ? ORDER BY id""",
        (conv_id,),
    ).fetchall()
    for r in rows:
        passages = conn.execute(
            "SELECT ordinal, page_start, page_end, tokens, text FROM passages WHERE attachment_id = ? ORDER BY ordinal",
            (r[0],),
        ).fetchall()
        out.append(
            {
                "id": r[0],
                "message_id": r[1],
                "name": r[2],
                "kind": r[3],
                "size": r[4],
                "sha256": r[5],
                "encoding": r[6],
                "pages": json.loads(r[7]),
                "tokens": r[8],
                "warnings": json.loads(r[9]),
                "created_at": ts_to_iso(r[10]),
                "passages": [dict(zip(_PASSAGE_FIELDS, p, strict=True)) for p in passages],
            }
        )
    return out


def _fail(where: str, expected: str, value: Any) -> Any:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise ValueError(f"{where}: expected {expected}, got {shown}")


def _count(where: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(where, f"an integer >= {minimum}", value)
    return int(value)


def _text(where: str, value: Any, *, optional: bool = False, nonempty: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or (nonempty and not value):
        _fail(where, ("a non-empty string" if nonempty else "a string") + (" or null" if optional else ""), value)
    return value


def _fields(where: str, obj: Any, fields: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(obj).__name__}")
    missing = [f for f in fields if f not in obj]
    if missing:
        raise ValueError(f"{where}.{missing[0]}: missing field")
    unknown = sorted(k for k in obj if k not in fields)
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown field")
    return obj


def validate_attachments(value: Any, message_ids: Collection[str], check_time: Any) -> list[dict[str, Any]]:
    """Check the export's ``attachments`` strictly; a clean copy, or ``ValueError`` naming what is wrong.

    Ids are unique integers, ``message_id`` names a message of the file (or null: pending), pages are
    ``[number, text]`` pairs numbered from 1, and every passage lies within the document's pages.
    """
    if not isinstance(value, list):
        _fail("attachments", "a list", value)
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i, item in enumerate(value):
        where = f"attachments[{i}]"
        a = _fields(where, item, ATTACHMENT_FIELDS)
        aid = _count(f"{where}.id", a["id"])
        if aid in seen:
            raise ValueError(f"{where}.id: duplicate id {aid}")
        seen.add(aid)
        message_id = _text(f"{where}.message_id", a["message_id"], optional=True, nonempty=True)
        if message_id is not None and message_id not in message_ids:
            raise ValueError(f"{where}.message_id: refers to unknown message {message_id!r}")
        kind = a["kind"]
        if kind not in KINDS:
            _fail(f"{where}.kind", "one of " + ", ".join(repr(k) for k in KINDS), kind)
        pages = a["pages"]
        if not isinstance(pages, list) or not pages:
            _fail(f"{where}.pages", "a non-empty list of [number, text] pairs", pages)
        numbers: list[int] = []
        for j, page in enumerate(pages):
            if not (isinstance(page, list) and len(page) == 2 and isinstance(page[1], str)):
                _fail(f"{where}.pages[{j}]", "a [number, text] pair", page)
            numbers.append(_count(f"{where}.pages[{j}][0]", page[0], minimum=1))
        warnings = a["warnings"]
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            _fail(f"{where}.warnings", "a list of strings", warnings)
        if not isinstance(a["passages"], list):
            _fail(f"{where}.passages", "a list", a["passages"])
        passages: list[dict[str, Any]] = []
        ordinals: set[int] = set()
        for j, p in enumerate(a["passages"]):
            pw = f"{where}.passages[{j}]"
            fields = _fields(pw, p, _PASSAGE_FIELDS)
            ordinal = _count(f"{pw}.ordinal", fields["ordinal"])
            if ordinal in ordinals:
                raise ValueError(f"{pw}.ordinal: duplicate ordinal {ordinal}")
            ordinals.add(ordinal)
            start = _count(f"{pw}.page_start", fields["page_start"], minimum=1)
            end = _count(f"{pw}.page_end", fields["page_end"], minimum=start)
            if start < min(numbers) or end > max(numbers):
                raise ValueError(f"{pw}: pages {start}–{end} are outside the document's pages")
            passages.append(
                {
                    "ordinal": ordinal,
                    "page_start": start,
                    "page_end": end,
                    "tokens": _count(f"{pw}.tokens", fields["tokens"]),
                    "text": _text(f"{pw}.text", fields["text"]),
                }
            )
        size = _count(f"{where}.size", a["size"])
        tokens = _count(f"{where}.tokens", a["tokens"])
        out.append(
            {
                "id": aid,
                "message_id": message_id,
                "name": _text(f"{where}.name", a["name"], nonempty=True),
                "kind": kind,
                "size": size,
                "sha256": _text(f"{where}.sha256", a["sha256"]),
                "encoding": _text(f"{where}.encoding", a["encoding"], optional=True),
                "pages": [[int(n), str(t)] for n, t in pages],
                "tokens": tokens,
                "warnings": list(warnings),
                "created_at": check_time(f"{where}.created_at", a["created_at"]),
                "passages": passages,
            }
        )
    return out


def check_provenance_refs(messages: Sequence[Mapping[str, Any]], attachment_ids: Collection[int]) -> None:
    """A message's recorded documents must name attachments of the same file (or none)."""
    for i, m in enumerate(messages):
        provenance = m.get("provenance")
        items = provenance.get(PROVENANCE_KEY) if isinstance(provenance, Mapping) else None
        if items is None:
            continue
        if not isinstance(items, list):
            _fail(f"messages[{i}].provenance.{PROVENANCE_KEY}", "a list", items)
        for j, item in enumerate(items):
            ref = item.get("attachment_id") if isinstance(item, Mapping) else None
            if ref is not None and ref not in attachment_ids:
                where = f"messages[{i}].provenance.{PROVENANCE_KEY}[{j}].attachment_id"
                raise ValueError(f"{where}: refers to unknown attachment {ref!r}")


def import_attachments(
    conn: sqlite3.Connection,
    conv_id: str,
    attachments: Sequence[Mapping[str, Any]],
    message_ids: Mapping[str, str],
    iso_to_ts: Any,
) -> dict[int, int]:
    """Insert validated attachments (and their passages, indexed by the triggers) under ``conv_id``; returns the
    old → new attachment ids. ``message_ids`` maps the file's message ids to the new ones."""
    mapping: dict[int, int] = {}
    for a in attachments:
        cur = conn.execute(
            """INSERT INTO attachments (conversation_id, message_id, name, kind, size_bytes, sha256, encoding,
                   page_count, pages, tokens, warnings, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                conv_id,
                None if a["message_id"] is None else message_ids[a["message_id"]],
                a["name"],
                a["kind"],
                a["size"],
                a["sha256"],
                a["encoding"],
                len(a["pages"]),
                json.dumps(a["pages"], ensure_ascii=False),
                a["tokens"],
                json.dumps(a["warnings"], ensure_ascii=False),
                iso_to_ts(a["created_at"]),
            ),
        )
        new = int(cur.lastrowid or 0)
        mapping[int(a["id"])] = new
        conn.executemany(
            """INSERT INTO passages (attachment_id, ordinal, page_start, page_end, tokens, text)
               VALUES (?, ?, ?, ?, ?, ?)""",
            [(new, p["ordinal"], p["page_start"], p["page_end"], p["tokens"], p["text"]) for p in a["passages"]],
        )
    return mapping


def duplicate_attachments(
    conn: sqlite3.Connection, old_conv: str, new_conv: str, message_ids: Mapping[str, str]
) -> dict[int, int]:
    """Copy a conversation's attachments and passages to ``new_conv`` (for duplicate); old → new attachment ids."""
    mapping: dict[int, int] = {}
    rows = conn.execute(
        """SELECT id, message_id, name, kind, size_bytes, sha256, encoding, page_count, pages, tokens, warnings,
                  created_at FROM attachments WHERE conversation_id = ? ORDER BY id""",
        (old_conv,),
    ).fetchall()
    for r in rows:
        cur = conn.execute(
            """INSERT INTO attachments (conversation_id, message_id, name, kind, size_bytes, sha256, encoding,
                   page_count, pages, tokens, warnings, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (new_conv, None if r[1] is None else message_ids.get(r[1]), *r[2:]),
        )
        mapping[r[0]] = int(cur.lastrowid or 0)
        conn.execute(
            """INSERT INTO passages (attachment_id, ordinal, page_start, page_end, tokens, text)
               SELECT ?, ordinal, page_start, page_end, tokens, text FROM passages WHERE attachment_id = ?
               ORDER BY ordinal""",
            (mapping[r[0]], r[0]),
        )
    return mapping


def remap_provenance(provenance: Any, mapping: Mapping[int, int]) -> Any:
    """``provenance`` with its recorded documents' attachment ids replaced by their new ids."""
    if not isinstance(provenance, Mapping) or not isinstance(provenance.get(PROVENANCE_KEY), list):
        return provenance
    items = [
        {**item, "attachment_id": mapping.get(item["attachment_id"])}
        if isinstance(item, Mapping) and isinstance(item.get("attachment_id"), int)
        else item
        for item in provenance[PROVENANCE_KEY]
    ]
    return {**provenance, PROVENANCE_KEY: items}
