"""Conversation interchange: the versioned JSON format, strict import validation, export, import and duplicate.

All functions work on the *conversation dict* of the versioned JSON format (what
:meth:`olmo3.store.ConversationStore.export_dict` returns and :func:`from_json` yields)::

    {"format": "olmo-desktop.conversation", "version": 1,
     "id", "title", "title_is_auto", "model_id", "model_revision", "system_prompt",
     "sampling", "created_at", "updated_at", "pinned", "folder", "engine_state",
     "messages": [{"id", "parent_id", "role", "content", "reasoning", "token_ids",
                   "stats", "provenance", "state", "created_at", "active", "tool"}, ...]}

``tool`` (an assistant's function calls, or an ``environment`` message's call and result) came with tool turns;
files written before it have no such key and read as ``null``.

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
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, NoReturn

from olmo3.ids import new_id

from .records import (
    ROLES,
    STATES,
    Conversation,
    Message,
    NotFoundError,
    dump_json,
    dump_json_opt,
    encode_token_ids,
    tool_search_text,
)
from .render import active_path, to_html, to_markdown

__all__ = [
    "FORMAT",
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

FORMAT: Final = "olmo-desktop.conversation"
VERSION: Final = 1


# --------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------


def ts_to_iso(ts: float) -> str:
    """Unix seconds → ``2025-01-31T12:00:00.123456Z`` (stable through :func:`iso_to_ts`)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def iso_to_ts(text: str) -> float:
    """ISO 8601 → Unix seconds; a time without a zone is taken as UTC."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

_CONV_FIELDS: Final = (
    "format",
    "version",
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
    "engine_state",
    "messages",
)
_MSG_FIELDS: Final = (
    "id",
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
    "tool",
)
_OPTIONAL_MSG_FIELDS: Final = frozenset({"tool"})  # absent in files from before tool turns


class _Checker:
    """Field checks that name where the problem is (``messages[3].token_ids: ...``)."""

    def __init__(
        self, obj: Mapping[str, Any], where: str, fields: Sequence[str], optional: frozenset[str] = frozenset()
    ) -> None:
        self.obj = {**dict.fromkeys(f for f in optional if f not in obj), **obj}
        self.where = where
        missing = [f for f in fields if f not in self.obj]
        if missing:
            raise ValueError(f"{where}missing field {missing[0]!r}")
        unknown = sorted(k for k in obj if k not in fields)
        if unknown:
            raise ValueError(f"{where}unknown field {unknown[0]!r}")

    def fail(self, key: str, expected: str) -> NoReturn:
        value = self.obj[key]
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ValueError(f"{self.where}{key}: expected {expected}, got {shown}")

    def str_(self, key: str, *, optional: bool = False, nonempty: bool = False) -> str | None:
        value = self.obj[key]
        if value is None and optional:
            return None
        if not isinstance(value, str) or (nonempty and not value):
            expected = "a non-empty string" if nonempty else "a string"
            self.fail(key, expected + (" or null" if optional else ""))
        return value

    def bool_(self, key: str) -> bool:
        value = self.obj[key]
        if not isinstance(value, bool):
            self.fail(key, "true or false")
        return value

    def dict_(self, key: str, *, optional: bool = False) -> dict[str, Any] | None:
        value = self.obj[key]
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            self.fail(key, "an object" + (" or null" if optional else ""))
        copied: dict[str, Any] = json.loads(json.dumps(value))  # deep copy; also proves it is plain JSON
        return copied

    def choice(self, key: str, choices: Sequence[str]) -> str:
        value = self.obj[key]
        if not isinstance(value, str) or value not in choices:
            self.fail(key, "one of " + ", ".join(repr(c) for c in choices))
        return value

    def time(self, key: str) -> str:
        value = self.obj[key]
        if not isinstance(value, str):
            self.fail(key, "an ISO 8601 date-time string")
        try:
            iso_to_ts(value)
        except (ValueError, OverflowError):
            self.fail(key, "an ISO 8601 date-time string")
        return value

    def token_ids(self, key: str) -> list[int] | None:
        value = self.obj[key]
        if value is None:
            return None
        if not isinstance(value, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
        ):
            self.fail(key, "a list of non-negative integers or null")
        return list(value)


def validate_conversation(data: Any) -> dict[str, Any]:
    """Check a conversation dict strictly; return a clean deep copy or raise ``ValueError``.

    Checks the format tag and version, every field's presence and type, unique message ids,
    parent references (known, same file, no cycles) and one active message per sibling group.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a JSON object at the top level, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ValueError(f"not an Olmo Desktop conversation: 'format' is {data.get('format')!r}, expected {FORMAT!r}")
    version = data.get("version")
    if version != VERSION or isinstance(version, bool):
        raise ValueError(f"unsupported conversation format version {version!r} (this app reads {VERSION})")
    c = _Checker(data, "", _CONV_FIELDS)
    out: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "id": c.str_("id", nonempty=True),
        "title": c.str_("title"),
        "title_is_auto": c.bool_("title_is_auto"),
        "model_id": c.str_("model_id", optional=True),
        "model_revision": c.str_("model_revision", optional=True),
        "system_prompt": c.str_("system_prompt", optional=True),
        "sampling": c.dict_("sampling"),
        "created_at": c.time("created_at"),
        "updated_at": c.time("updated_at"),
        "pinned": c.bool_("pinned"),
        "folder": c.str_("folder", optional=True),
        "engine_state": c.dict_("engine_state", optional=True),
    }
    if not isinstance(data["messages"], list):
        c.fail("messages", "a list")
    messages = [_validate_message(m, i) for i, m in enumerate(data["messages"])]
    _check_tree(messages)
    out["messages"] = messages
    return out


def _validate_message(msg: Any, index: int) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(msg, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(msg).__name__}")
    c = _Checker(msg, where + ".", _MSG_FIELDS, _OPTIONAL_MSG_FIELDS)
    return {
        "id": c.str_("id", nonempty=True),
        "parent_id": c.str_("parent_id", optional=True, nonempty=True),
        "role": c.choice("role", ROLES),
        "content": c.str_("content"),
        "reasoning": c.str_("reasoning"),
        "token_ids": c.token_ids("token_ids"),
        "stats": c.dict_("stats", optional=True),
        "provenance": c.dict_("provenance", optional=True),
        "state": c.choice("state", STATES),
        "created_at": c.time("created_at"),
        "active": c.bool_("active"),
        "tool": c.dict_("tool", optional=True),
    }


def _check_tree(messages: Sequence[Mapping[str, Any]]) -> None:
    index: dict[str, int] = {}
    for i, m in enumerate(messages):
        if m["id"] in index:
            raise ValueError(f"messages[{i}].id: duplicate id {m['id']!r} (also messages[{index[m['id']]}])")
        index[m["id"]] = i
    for i, m in enumerate(messages):
        parent = m["parent_id"]
        if parent is not None and parent not in index:
            raise ValueError(f"messages[{i}].parent_id: refers to unknown message {parent!r}")
    for i, m in enumerate(messages):  # walk up from each message: a cycle never reaches a root
        seen = {m["id"]}
        node = m
        while node["parent_id"] is not None:
            if node["parent_id"] in seen:
                raise ValueError(f"messages[{i}].parent_id: the parent chain loops back to {node['parent_id']!r}")
            seen.add(node["parent_id"])
            node = messages[index[node["parent_id"]]]
    groups: dict[str | None, list[int]] = {}
    for i, m in enumerate(messages):
        groups.setdefault(m["parent_id"], []).append(i)
    for parent, members in groups.items():
        active = [i for i in members if messages[i]["active"]]
        if len(active) != 1:
            where = "the root messages" if parent is None else f"the replies to {parent!r}"
            raise ValueError(
                f"messages: exactly one of {where} must be active, found {len(active)} "
                f"(messages {', '.join(f'[{i}]' for i in members)})"
            )


def parents_first(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Order messages so every parent precedes its children, otherwise keeping the given order.

    Sibling order is list order, so this keeps branches numbered as they were exported.
    """
    by_parent: dict[str | None, list[Mapping[str, Any]]] = {}
    for m in messages:
        by_parent.setdefault(m["parent_id"], []).append(m)
    placed: set[str] = set()
    out: list[Mapping[str, Any]] = []
    pending = list(messages)
    while pending:  # usually one pass: our own exports are already parents-first
        rest = []
        for m in pending:
            if m["parent_id"] is None or m["parent_id"] in placed:
                out.append(m)
                placed.add(m["id"])
            else:
                rest.append(m)
        if len(rest) == len(pending):
            raise ValueError("messages: parent references do not form a tree")
        pending = rest
    return out


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def to_json(conv: Mapping[str, Any]) -> str:
    """Lossless, versioned JSON (UTF-8 text, stable key order, trailing newline)."""
    return json.dumps(conv, ensure_ascii=False, indent=2, allow_nan=False) + "\n"


def from_json(text: str | bytes) -> dict[str, Any]:
    """Parse and strictly validate an exported conversation; ``ValueError`` says what is wrong."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not a UTF-8 text file ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
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


class InterchangeMixin:
    """:meth:`duplicate`, :meth:`export_dict` and :meth:`import_conversation` for the store."""

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
            conn.executemany(
                "INSERT INTO messages (id, conversation_id, parent_id, role, content, reasoning, "
                "token_ids, stats, provenance, state, created_at, active, tool, tool_text) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        mapping[r[0]],
                        new_conv,
                        None if r[1] is None else mapping[r[1]],
                        *r[2:8],
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
                        dump_json_opt(m["provenance"], "provenance"),
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
