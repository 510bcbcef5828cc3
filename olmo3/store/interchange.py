"""Conversation interchange: the versioned JSON format, export, import (bounded, strictly validated by
:mod:`olmo3.store.validation`) and duplicate.

All functions work on the *conversation dict* of the versioned JSON format (what
:meth:`olmo3.store.ConversationStore.export_dict` returns and :func:`from_json` yields)::

    {"format": "olmo-desktop.conversation", "version": 3,
     "id", "title", "title_is_auto", "model_id", "model_revision", "system_prompt",
     "sampling", "created_at", "updated_at", "pinned", "folder", "engine_state",
     "messages": [{"id", "parent_id", "role", "content", "reasoning", "token_ids",
                   "stats", "provenance", "state", "created_at", "active", "tool"}, ...],
     "attachments": [{"id", "message_id", "name", "kind", "size", "sha256", "encoding",
                      "pages": [[number, text], ...], "tokens", "warnings", "created_at",
                      "passages": [{"ordinal", "page_start", "page_end", "tokens", "text"}, ...]}, ...]}

Version 2 added ``attachments`` (attached documents in full: their text by page and their passages); a user
message's ``provenance["attachments"]`` records which documents and passages its turn used, by attachment ``id``.
Version 3 added each message's ``tool``: an assistant's function calls, or an ``environment`` message's call and
result (tool turns). Version 1 files (no attachments) and version 2 files (no tool data) still import.

JSON is lossless (the whole branch tree, token ids, stats, provenance, the engine's state);
Markdown and HTML (:func:`to_markdown`, :func:`to_html`, from :mod:`olmo3.store.render`) show the
active branch, the one on screen.

:class:`InterchangeMixin` gives the store :meth:`~InterchangeMixin.export_dict`,
:meth:`~InterchangeMixin.import_conversation` and :meth:`~InterchangeMixin.duplicate`: whole
conversations (tree and engine state) under new ids.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final

from olmo3.fileio import json_depth
from olmo3.ids import new_id

from .attachments import (
    duplicate_attachments,
    export_attachments,
    import_attachments,
    remap_provenance,
)
from .records import (
    Conversation,
    Message,
    NotFoundError,
    dump_json,
    dump_json_opt,
    encode_token_ids,
    tool_search_text,
)
from .render import active_path, to_html, to_markdown
from .validation import (
    FORMAT,
    MAX_IMPORT_DEPTH,
    MAX_TOKEN_ID,
    READABLE_VERSIONS,
    VERSION,
    iso_to_ts,
    parents_first,
    ts_to_iso,
    validate_conversation,
)

__all__ = [
    "FORMAT",
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_DEPTH",
    "MAX_TOKEN_ID",
    "READABLE_VERSIONS",
    "VERSION",
    "InterchangeMixin",
    "active_path",
    "from_json",
    "iso_to_ts",
    "parents_first",
    "to_html",
    "to_json",
    "to_markdown",
    "ts_to_iso",
    "validate_conversation",
]

MAX_IMPORT_BYTES: Final = 512 * 1024**2  # a very long conversation with token ids and its engine state: ~10 MB


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def to_json(conv: Mapping[str, Any]) -> str:
    """Lossless, versioned JSON (UTF-8 text, stable key order, trailing newline)."""
    return json.dumps(conv, ensure_ascii=False, indent=2, allow_nan=False) + "\n"


def _no_constant(name: str) -> Any:
    raise ValueError(f"not valid JSON: {name} is not a JSON number")


def from_json(text: str | bytes) -> dict[str, Any]:
    """Parse and strictly validate an exported conversation; ``ValueError`` says what is wrong.

    Bounded before the parser sees it: at most ``MAX_IMPORT_BYTES`` and nesting ``MAX_IMPORT_DEPTH`` deep (a file
    of thousands of brackets is refused, not a ``RecursionError``); ``NaN``/``Infinity`` are refused.
    """
    if len(text) > MAX_IMPORT_BYTES:
        raise ValueError(f"larger than {MAX_IMPORT_BYTES // 1024**2} MB; not an exported conversation")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not a UTF-8 text file ({exc})") from None
    depth = json_depth(text)
    if depth > MAX_IMPORT_DEPTH:
        raise ValueError(f"nested {depth} levels deep (an exported conversation nests at most {MAX_IMPORT_DEPTH})")
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:  # json_depth is a guard, not a parser: never let this through
        raise ValueError("nested too deeply to be an exported conversation") from None
    except ValueError as exc:  # a number with thousands of digits, NaN/Infinity
        raise ValueError(str(exc) if str(exc).startswith("not valid JSON") else f"not valid JSON: {exc}") from None
    return validate_conversation(data)


# --------------------------------------------------------------------------------------------
# The store's side: export, import, duplicate
# --------------------------------------------------------------------------------------------


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


def _remap_provenance_text(text: str | None, documents: Mapping[int, int]) -> str | None:
    """A stored provenance column with its recorded documents pointing at the copied attachments."""
    if text is None or not documents:
        return text
    return dump_json(remap_provenance(json.loads(text), documents), "provenance")


class InterchangeMixin:
    """:meth:`duplicate`, :meth:`export_dict` and :meth:`import_conversation` for the store."""

    _conn: sqlite3.Connection

    if TYPE_CHECKING:  # provided by ConversationStore

        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _messages(self, conv_id: str, where: str = "", args: Sequence[Any] = ()) -> list[Message]: ...

        def flush(self, message_id: str | None = None) -> None: ...

        def get_conversation(self, conv_id: str) -> Conversation: ...

        def get_engine_state(self, conv_id: str) -> dict[str, Any] | None: ...

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
            new_conv = new_id()
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
                "state, created_at, active, tool, tool_text FROM messages WHERE conversation_id = ? ORDER BY seq",
                (conv_id,),
            ).fetchall()
            for r in rows:
                mapping[r[0]] = new_id()
            documents = duplicate_attachments(conn, conv_id, new_conv, mapping)
            conn.executemany(
                "INSERT INTO messages (id, conversation_id, parent_id, role, content, reasoning, "
                "token_ids, stats, provenance, state, created_at, active, tool, tool_text) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        mapping[r[0]],
                        new_conv,
                        None if r[1] is None else mapping[r[1]],
                        *r[2:7],
                        _remap_provenance_text(r[7], documents),
                        "interrupted" if r[8] == "streaming" else r[8],
                        r[9],
                        r[10],
                        r[11],
                        r[12],
                    )
                    for r in rows
                ],
            )
            if engine_state is not None:
                remapped = _remap_ids(json.loads(engine_state), mapping)
                conn.execute(
                    "UPDATE conversations SET engine_state = ? WHERE id = ?",
                    (dump_json(remapped, "engine_state"), new_conv),
                )
        return new_conv

    def export_dict(self, conv_id: str) -> dict[str, Any]:
        """The conversation in the versioned export format of this module (whole tree)."""
        with self._read():
            conv = self.get_conversation(conv_id)
            engine_state = self.get_engine_state(conv_id)
            messages = self._messages(conv_id)
            attachments = export_attachments(self._conn, conv_id, ts_to_iso)
        return {
            "format": FORMAT,
            "version": VERSION,
            "id": conv.id,
            "title": conv.title,
            "title_is_auto": conv.title_is_auto,
            "model_id": conv.model_id,
            "model_revision": conv.model_revision,
            "system_prompt": conv.system_prompt,
            "sampling": conv.sampling,
            "created_at": ts_to_iso(conv.created_at),
            "updated_at": ts_to_iso(conv.updated_at),
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
                    "created_at": ts_to_iso(m.created_at),
                    "active": m.active,
                    "tool": m.tool,
                }
                for m in messages
            ],
            "attachments": attachments,
        }

    def import_conversation(self, conv_dict: Mapping[str, Any]) -> str:
        """Import an exported conversation under new ids, in one transaction; returns its id.

        The dict is validated first (``ValueError`` naming the problem); on any error nothing
        is written. A message exported mid-stream comes back as 'interrupted'.
        """
        data = validate_conversation(conv_dict)
        new_conv = new_id()
        mapping: dict[str, str] = {data["id"]: new_conv}
        for m in data["messages"]:
            mapping[m["id"]] = new_id()
        engine_state = data["engine_state"]
        with self._write() as conn:
            # Attachments first: the messages' provenance names them by their new ids.
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
                    dump_json(data["sampling"], "sampling"),
                    iso_to_ts(data["created_at"]),
                    iso_to_ts(data["updated_at"]),
                    int(data["pinned"]),
                    data["folder"],
                    None if engine_state is None else dump_json(_remap_ids(engine_state, mapping), "engine_state"),
                ),
            )
            documents = import_attachments(conn, new_conv, data["attachments"], mapping, iso_to_ts)
            conn.executemany(
                "INSERT INTO messages (id, conversation_id, parent_id, role, content, reasoning, "
                "token_ids, stats, provenance, state, created_at, active, tool, tool_text) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        mapping[m["id"]],
                        new_conv,
                        None if m["parent_id"] is None else mapping[m["parent_id"]],
                        m["role"],
                        m["content"],
                        m["reasoning"],
                        encode_token_ids(m["token_ids"]),
                        dump_json_opt(m["stats"], "stats"),
                        dump_json_opt(remap_provenance(m["provenance"], documents), "provenance"),
                        "interrupted" if m["state"] == "streaming" else m["state"],
                        iso_to_ts(m["created_at"]),
                        int(m["active"]),
                        dump_json_opt(m["tool"], "tool"),
                        tool_search_text(m["tool"]),
                    )
                    for m in parents_first(data["messages"])
                ],
            )
        return new_conv
