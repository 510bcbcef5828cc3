"""Salvage what is readable from a damaged conversation store into a new one (``olmo3 store recover``).

SQLite's own recovery (the ``sqlite3`` shell's ``.recover``, built on the ``sqlite_dbpage`` table and the recover
extension) is not part of Python's ``sqlite3`` module: this build has neither ``sqlite_dbpage`` nor the extension
(``Connection.serialize`` only copies the pages as they are). So this is a row-by-row copy:

* The damaged file is opened read-only (:func:`olmo3.store.health.connect_read_only`): it is never changed.
* Each table is read in rowid order. When a read fails on a damaged page, the scan probes forward for the next
  readable key (doubling the step, then bisecting back to the first readable one), skips a row whose own content
  cannot be read, and goes on: one bad page costs the rows on it, not the rest of the table.
* Every row is checked as an import would check it; rows that are not plausible are skipped. Messages whose
  conversation row was lost are kept under a "Recovered messages" conversation with the lost id; a message whose
  parent was lost becomes a root; each group of replies gets exactly one shown branch again.
* The rows go into a new store (``dest`` must not exist), whose triggers rebuild the search index. An engine state
  is kept only where the conversation's messages came through whole; otherwise the app rebuilds it from the text.
  Attached documents are not copied (a turn's provenance keeps their names, unlinked).
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .health import connect_read_only
from .records import ROLES, STATES, NewerStoreError, NotAStoreError, StoreError, tool_search_text
from .schema import CURRENT_VERSION

if TYPE_CHECKING:
    from .db import ConversationStore

__all__ = ["SalvageReport", "salvage"]

_MIN_KEY: Final = -(2**63)
_MAX_KEY: Final = 2**63 - 1
MAX_GAP_PROBES: Final = 1_000_000  # key lookups between the keys a scan found (rowids are dense: deletes leave gaps)
_CONV_COLUMNS: Final = (
    "id",
    "title",
    "title_is_auto",
    "model_id",
    "model_revision",
    "system_prompt",
    "sampling",
    "created_at",
    "updated_at",
    "pinned",
    "folder",
    "deleted_at",
    "engine_state",
)
_MSG_COLUMNS: Final = (
    "id",
    "conversation_id",
    "parent_id",
    "role",
    "content",
    "reasoning",
    "token_ids",
    "stats",
    "provenance",
    "state",
    "created_at",
    "active",
    "tool",  # schema 5 (tool turns); NULL from older files
)
RECOVERED_TITLE: Final = "Recovered messages"


@dataclass
class SalvageReport:
    """What :func:`salvage` copied and what it had to leave behind."""

    source: Path
    dest: Path
    conversations: int = 0
    messages: int = 0
    skipped_regions: dict[str, int] = field(default_factory=dict)  # table -> unreadable stretches skipped
    skipped_rows: int = 0  # rows read but not plausible (wrong types, unknown role, ...)
    orphan_conversations: int = 0  # "Recovered messages" conversations made for messages whose conversation was lost
    reattached: int = 0  # messages whose parent was lost, now roots

    def summary(self) -> str:
        regions = sum(self.skipped_regions.values())
        parts = [f"saved {self.conversations} conversations and {self.messages} messages into {self.dest}"]
        if regions:
            where = ", ".join(f"{n} in {t}" for t, n in sorted(self.skipped_regions.items()) if n)
            parts.append(f"skipped {regions} unreadable stretch(es) ({where})")
        if self.skipped_rows:
            parts.append(f"left out {self.skipped_rows} implausible row(s)")
        if self.orphan_conversations:
            parts.append(
                f"{self.orphan_conversations} conversation(s) titled {RECOVERED_TITLE!r} hold messages whose "
                "conversation was lost"
            )
        if self.reattached:
            parts.append(f"{self.reattached} message(s) lost their parent and start a branch of their own")
        return "; ".join(parts)


class _Reader:
    """Rows of one table in rowid order, skipping what cannot be read."""

    def __init__(self, conn: sqlite3.Connection, table: str, columns: Sequence[str]) -> None:
        self.conn = conn
        self.table = table
        self.columns = ", ".join(columns)
        self.skipped = 0
        self.gap_rows = 0  # rows found by key lookups in the gaps a damaged scan jumped over

    def _first_key_after(self, after: int) -> int | None:
        row = self.conn.execute(f"SELECT seq FROM {self.table} WHERE seq > ? ORDER BY seq LIMIT 1", (after,)).fetchone()
        if row is None:
            return None
        if not isinstance(row[0], int) or row[0] <= after:  # a damaged page can hand back any key
            raise sqlite3.DatabaseError("keys out of order")
        return row[0]

    def _next_key(self, after: int) -> int | None:
        """The smallest readable key above ``after`` (jumping over stretches whose keys cannot be read)."""
        try:
            return self._first_key_after(after)
        except sqlite3.DatabaseError:
            pass
        bad, step = after, 1
        while True:  # double the step until a probe reads
            probe = bad + step
            if probe >= _MAX_KEY:
                return None
            try:
                self._first_key_after(probe)
            except sqlite3.DatabaseError:
                bad, step = probe, step * 2
                continue
            good = probe
            break
        while good - bad > 1:  # bisect back to the first start that reads
            mid = (bad + good) // 2
            try:
                self._first_key_after(mid)
            except sqlite3.DatabaseError:
                bad = mid
            else:
                good = mid
        return self._first_key_after(good)

    def _scan(self) -> Iterator[tuple[Any, ...]]:
        after = _MIN_KEY
        while True:
            try:
                cursor = self.conn.execute(
                    f"SELECT seq, {self.columns} FROM {self.table} WHERE seq > ? ORDER BY seq", (after,)
                )
                for row in cursor:
                    if not isinstance(row[0], int) or row[0] <= after:  # a damaged page can hand back any key
                        raise sqlite3.DatabaseError("keys out of order")
                    after = row[0]
                    yield row
                return
            except sqlite3.DatabaseError:
                self.skipped += 1
            key = self._next_key(after)
            if key is None:
                return
            after = key
            row = self._point(key)
            if row is not None:
                yield row

    def _point(self, key: int) -> tuple[Any, ...] | None:
        """One row by its key (None if absent or unreadable)."""
        try:
            row = self.conn.execute(f"SELECT seq, {self.columns} FROM {self.table} WHERE seq = ?", (key,)).fetchone()
        except sqlite3.DatabaseError:
            return None
        return tuple(row) if row is not None and row[0] == key else None

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Every readable row (without its key), in key order as far as the scan goes.

        A damaged leaf can also make a range scan jump silently past rows on intact pages; so the gaps between
        the keys the scan found are looked up one key at a time afterwards (``MAX_GAP_PROBES`` in all).
        """
        seen: list[int] = []
        for row in self._scan():
            seen.append(row[0])
            yield row[1:]
        if not seen:
            return
        try:
            top = self.conn.execute(f"SELECT max(seq) FROM {self.table}").fetchone()[0]
        except sqlite3.DatabaseError:
            top = None
        keys = sorted(set(seen))
        if isinstance(top, int) and top > keys[-1]:
            keys.append(top + 1)
        budget = MAX_GAP_PROBES
        for low, high in itertools.pairwise(keys):
            for key in range(low + 1, min(high, low + 1 + budget)):
                budget -= 1
                found = self._point(key)
                if found is not None:
                    self.gap_rows += 1
                    yield found[1:]
            if budget <= 0:
                return


def _columns(conn: sqlite3.Connection, table: str, wanted: Sequence[str]) -> list[str]:
    """``wanted`` with NULL standing in for columns an older schema lacks."""
    have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
    if "seq" not in have or "id" not in have:
        raise StoreError(f"the {table} table has no readable columns")
    return [c if c in have else f"NULL AS {c}" for c in wanted]


def _text(value: Any, default: str | None = None) -> str | None:
    return value if isinstance(value, str) and "\x00" not in value else default


def _time(value: Any, default: float) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if number and 0 <= value < 253402214400:  # what ts_to_iso can write: up to 9999-12-31
        return float(value)
    return default


def _json_text(value: Any, *, kind: type) -> str | None:
    """The column's JSON text if it parses (bounded) to ``kind``, else None."""
    from ..fileio import loads_json

    if not isinstance(value, str):
        return None
    try:
        parsed = loads_json(value, what="a column")
        json.dumps(parsed, allow_nan=False)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, kind):
        return None
    if isinstance(parsed, list) and not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**32 for t in parsed
    ):
        return None
    return value


def _clean_conversation(row: Sequence[Any], now: float) -> dict[str, Any] | None:
    r = dict(zip(_CONV_COLUMNS, row, strict=True))
    conv_id = _text(r["id"])
    if not conv_id:
        return None
    created = _time(r["created_at"], now)
    deleted = r["deleted_at"]
    return {
        "id": conv_id,
        "title": _text(r["title"]) or "Recovered conversation",
        "title_is_auto": 1 if r["title_is_auto"] in (1, None) and r["title"] else 0,
        "model_id": _text(r["model_id"]),
        "model_revision": _text(r["model_revision"]),
        "system_prompt": _text(r["system_prompt"]),
        "sampling": _json_text(r["sampling"], kind=dict) or "{}",
        "created_at": created,
        "updated_at": _time(r["updated_at"], created),
        "pinned": 1 if r["pinned"] == 1 else 0,
        "folder": _text(r["folder"]),
        "deleted_at": None if deleted is None else _time(deleted, now),
        "engine_state": _json_text(r["engine_state"], kind=dict),
    }


def _unlink_documents(provenance: str | None) -> str | None:
    """Attached documents are not salvaged (only conversations and messages are): a turn's record of the documents
    it used keeps their names and passages but no longer points at an attachment row."""
    if provenance is None or '"attachments"' not in provenance:
        return provenance
    data = json.loads(provenance)
    items = data.get("attachments")
    if isinstance(items, list):
        data["attachments"] = [{**i, "attachment_id": None} if isinstance(i, dict) else i for i in items]
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _clean_message(row: Sequence[Any], now: float) -> dict[str, Any] | None:
    r = dict(zip(_MSG_COLUMNS, row, strict=True))
    msg_id, conv_id = _text(r["id"]), _text(r["conversation_id"])
    if not msg_id or not conv_id or r["role"] not in ROLES:
        return None
    state = r["state"] if r["state"] in STATES else "interrupted"
    return {
        "id": msg_id,
        "conversation_id": conv_id,
        "parent_id": _text(r["parent_id"]),
        "role": r["role"],
        "content": _text(r["content"], ""),
        "reasoning": _text(r["reasoning"], ""),
        "token_ids": _json_text(r["token_ids"], kind=list),
        "stats": _json_text(r["stats"], kind=dict),
        "provenance": _unlink_documents(_json_text(r["provenance"], kind=dict)),
        "state": "interrupted" if state == "streaming" else state,
        "created_at": _time(r["created_at"], now),
        "active": 1 if r["active"] in (1, None) else 0,
        "tool": _json_text(r["tool"], kind=dict),
    }


def _placeholder(conv_id: str, created: float) -> dict[str, Any]:
    """A conversation row for messages whose own conversation row was lost (the lost id is kept)."""
    row: dict[str, Any] = dict.fromkeys(_CONV_COLUMNS)
    row.update(id=conv_id, title=RECOVERED_TITLE, title_is_auto=0, sampling="{}", pinned=0)
    row.update(created_at=created, updated_at=created)
    return row


def _repair_tree(messages: list[dict[str, Any]], report: SalvageReport) -> list[dict[str, Any]]:
    """Parents that were lost become roots; every sibling group gets one active member; parents come first."""
    by_id = {m["id"]: m for m in messages}
    for m in messages:
        parent = by_id.get(m["parent_id"]) if m["parent_id"] is not None else None
        if m["parent_id"] is not None and (parent is None or parent["conversation_id"] != m["conversation_id"]):
            m["parent_id"] = None
            report.reattached += 1
    ordered: list[dict[str, Any]] = []
    placed: set[str] = set()
    pending = messages
    while pending:
        rest = []
        for m in pending:
            if m["parent_id"] is None or m["parent_id"] in placed:
                ordered.append(m)
                placed.add(m["id"])
            else:
                rest.append(m)
        if len(rest) == len(pending):  # a cycle (damaged ids): break it at its first member
            rest[0]["parent_id"] = None
            report.reattached += 1
        pending = rest
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for m in ordered:
        groups.setdefault((m["conversation_id"], m["parent_id"]), []).append(m)
    for members in groups.values():
        active = [m for m in members if m["active"]]
        keep = active[0] if active else members[-1]
        for m in members:
            m["active"] = 1 if m is keep else 0
    return ordered


def _open_source(source: Path) -> sqlite3.Connection:
    if not source.is_file():
        raise StoreError(f"{source}: no such file")
    with open(source, "rb") as f:
        magic = f.read(16)
    if magic != b"SQLite format 3\x00":
        raise NotAStoreError(f"{source} is not a conversation database (not an SQLite file)")
    return connect_read_only(source)


def salvage(source: str | Path, dest: str | Path) -> SalvageReport:
    """Copy every readable conversation and message of ``source`` into a new store at ``dest``.

    ``source`` is only read. Raises ``FileExistsError`` if ``dest`` exists and :class:`StoreError` when
    ``source`` is no conversation store at all or nothing of it can be read.
    """
    from .db import ConversationStore

    source, dest = Path(source), Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists already; name a new file for the salvaged conversations")
    if dest.resolve() == source.resolve():
        raise ValueError("the salvage must go into a new file, not over the damaged one")
    conn = _open_source(source)
    report = SalvageReport(source, dest)
    now = time.time()
    try:
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            conv_cols = _columns(conn, "conversations", _CONV_COLUMNS)
            msg_cols = _columns(conn, "messages", _MSG_COLUMNS)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{source}: nothing can be read, not even the table definitions ({exc})") from exc
        if version > CURRENT_VERSION:
            raise NewerStoreError(f"{source} has schema version {version}; salvage it with the newer Olmo Desktop")
        conv_reader = _Reader(conn, "conversations", conv_cols)
        conversations: dict[str, dict[str, Any]] = {}
        for row in conv_reader.rows():
            conv = _clean_conversation(row, now)
            if conv is None:
                report.skipped_rows += 1
            else:
                conversations.setdefault(conv["id"], conv)
        msg_reader = _Reader(conn, "messages", msg_cols)
        messages: dict[str, dict[str, Any]] = {}
        for row in msg_reader.rows():
            msg = _clean_message(row, now)
            if msg is None or msg["id"] in messages:
                report.skipped_rows += 1
            else:
                messages[msg["id"]] = msg
        report.skipped_regions = {"conversations": conv_reader.skipped, "messages": msg_reader.skipped}
    finally:
        conn.close()
    ordered = _repair_tree(list(messages.values()), report)
    if msg_reader.skipped or report.reattached:
        for conv in conversations.values():  # its message tree may be incomplete: the app rebuilds the state
            conv["engine_state"] = None
    for m in ordered:
        if m["conversation_id"] not in conversations:
            report.orphan_conversations += 1
            conversations[m["conversation_id"]] = _placeholder(m["conversation_id"], m["created_at"])
    _write(ConversationStore, dest, conversations, ordered, report)
    return report


def _write(
    store_class: type[ConversationStore],
    dest: Path,
    conversations: dict[str, dict[str, Any]],
    messages: list[dict[str, Any]],
    report: SalvageReport,
) -> None:
    with store_class(dest, trash_retention_days=None) as store, store._write() as out:
        out.executemany(
            f"INSERT INTO conversations ({', '.join(_CONV_COLUMNS)}) VALUES ({', '.join('?' * len(_CONV_COLUMNS))})",
            [tuple(c[k] for k in _CONV_COLUMNS) for c in conversations.values()],
        )
        columns = (*_MSG_COLUMNS, "tool_text")  # the tool data's searchable text, made again
        out.executemany(
            f"INSERT INTO messages ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [
                (*(m[k] for k in _MSG_COLUMNS), tool_search_text(json.loads(m["tool"]) if m["tool"] else None))
                for m in messages
            ],
        )
    report.conversations = len(conversations)
    report.messages = len(messages)
