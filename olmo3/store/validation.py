"""The versioned conversation format's checks: timestamps, strict field validation and the message tree.

An import is refused here, with a message naming the field (``messages[3].token_ids: ...``), unless everything the
export must write back can be written: strings SQLite and UTF-8 files can hold, plain JSON objects (no NaN or
Infinity, nested at most ``MAX_IMPORT_DEPTH``), token ids within uint32, and dates UTC can hold (years 1 to 9999),
so import → export always works. :mod:`olmo3.store.interchange` re-exports everything public here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, NoReturn

from olmo3.fileio import MAX_JSON_DEPTH

from .attachments import check_provenance_refs, validate_attachments
from .records import DEFAULT_TITLE, ROLES, STATES

__all__ = [
    "FORMAT",
    "MAX_IMPORT_DEPTH",
    "MAX_TOKEN_ID",
    "READABLE_VERSIONS",
    "VERSION",
    "iso_to_ts",
    "parents_first",
    "ts_to_iso",
    "validate_conversation",
]

FORMAT: Final = "olmo-desktop.conversation"
VERSION: Final = 3  # 2: attachments; 3: tool data on messages (``tool``)
READABLE_VERSIONS: Final = (1, 2, 3)
MAX_IMPORT_DEPTH: Final = MAX_JSON_DEPTH  # our own exports nest 6 levels deep (engine_state's nodes' stats)
MAX_TOKEN_ID: Final = 2**32 - 1  # token ids are uint32 everywhere


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
    "attachments",
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
    "tool",  # version 3: an assistant's function calls, or an environment message's call and result
)


def _shown(value: Any) -> str:
    """A value for an error message: one line, at most 60 characters (a hostile file's values can be huge)."""
    if isinstance(value, (dict, list)) and len(value) > 8:
        return f"a {type(value).__name__} of {len(value)} items"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # deep structures, or ints beyond repr's digit limit
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


class _Checker:
    """Field checks that name where the problem is (``messages[3].token_ids: ...``)."""

    def __init__(self, obj: Mapping[str, Any], where: str, fields: Sequence[str]) -> None:
        self.obj = obj
        self.where = where
        missing = [f for f in fields if f not in obj]
        if missing:
            raise ValueError(f"{where}missing field {_shown(missing[0])}")
        unknown = sorted(k for k in obj if k not in fields)
        if unknown:
            raise ValueError(f"{where}unknown field {_shown(unknown[0])}")

    def fail(self, key: str, expected: str) -> NoReturn:
        raise ValueError(f"{self.where}{key}: expected {expected}, got {_shown(self.obj[key])}")

    def str_(self, key: str, *, optional: bool = False, nonempty: bool = False) -> str | None:
        value = self.obj[key]
        if value is None and optional:
            return None
        if not isinstance(value, str) or (nonempty and not value):
            expected = "a non-empty string" if nonempty else "a string"
            self.fail(key, expected + (" or null" if optional else ""))
        if not _utf8(value):
            self.fail(key, "text without unpaired surrogates (it could not be saved or exported)")
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
        if _depth(value) > MAX_IMPORT_DEPTH:
            self.fail(key, f"an object nested at most {MAX_IMPORT_DEPTH} levels deep")
        try:  # a deep copy that also proves it is plain JSON, storable and exportable
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
            text.encode("utf-8")
        except (TypeError, ValueError):  # NaN/Infinity, non-JSON values, unpaired surrogates (UnicodeEncodeError)
            self.fail(key, "plain JSON (no NaN or Infinity, no unpaired surrogates)")
        copied: dict[str, Any] = json.loads(text)
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
        try:  # export writes it back as UTC: it must be a date-time UTC can hold (years 1 to 9999)
            ts = iso_to_ts(value)
            if not math.isfinite(ts):
                raise ValueError(value)
            iso_to_ts(ts_to_iso(ts))
        except (ValueError, OverflowError, OSError):
            self.fail(key, "an ISO 8601 date-time between the years 1 and 9999 (UTC)")
        return value

    def token_ids(self, key: str) -> list[int] | None:
        value = self.obj[key]
        if value is None:
            return None
        if not isinstance(value, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= MAX_TOKEN_ID for t in value
        ):
            self.fail(key, f"a list of non-negative integers (at most {MAX_TOKEN_ID}) or null")
        return list(value)


def _utf8(text: str) -> bool:
    """False for text SQLite and UTF-8 files cannot hold (unpaired surrogates such as a JSON ``"\\ud800"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _depth(value: Any) -> int:
    """Nesting depth of lists and dicts, without recursion (a dict built in code can be any depth)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_IMPORT_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _one_line(text: str) -> str:
    return " ".join(text.split())


def validate_conversation(data: Any) -> dict[str, Any]:
    """Check a conversation dict strictly; return a clean deep copy or raise ``ValueError``.

    Checks the format tag and version, every field's presence and type, unique message ids,
    parent references (known, same file, no cycles) and one active message per sibling group.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a JSON object at the top level, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ValueError(
            f"not an Olmo Desktop conversation: 'format' is {_shown(data.get('format'))}, expected {FORMAT!r}"
        )
    version = data.get("version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ValueError(
            f"unsupported conversation format version {_shown(version)} (this app reads "
            + " and ".join(map(str, READABLE_VERSIONS))
            + ")"
        )
    c = _Checker(data, "", _CONV_FIELDS if version >= 2 else _CONV_FIELDS[:-1])
    out: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "id": c.str_("id", nonempty=True),
        "title": _one_line(c.str_("title") or "") or DEFAULT_TITLE,  # a title is one line, as the sidebar shows it
        "title_is_auto": c.bool_("title_is_auto"),
        "model_id": c.str_("model_id", optional=True),
        "model_revision": c.str_("model_revision", optional=True),
        "system_prompt": c.str_("system_prompt", optional=True),
        "sampling": c.dict_("sampling"),
        "created_at": c.time("created_at"),
        "updated_at": c.time("updated_at"),
        "pinned": c.bool_("pinned"),
        "folder": _one_line(c.str_("folder", optional=True) or "") or None,
        "engine_state": c.dict_("engine_state", optional=True),
    }
    if not isinstance(data["messages"], list):
        c.fail("messages", "a list")
    messages = [_validate_message(m, i, version) for i, m in enumerate(data["messages"])]
    _check_tree(messages)
    out["messages"] = messages
    out["attachments"] = validate_attachments(data.get("attachments", []), {m["id"] for m in messages}, _check_time)
    check_provenance_refs(messages, {a["id"] for a in out["attachments"]})
    try:  # everything in them must be storable and exportable too
        json.dumps(out["attachments"], ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):
        raise ValueError("attachments: expected plain JSON text (no NaN or Infinity, no unpaired surrogates)") from None
    return out


def _check_time(where: str, value: Any) -> str:
    """An attachment's date-time, held to the same rule as the messages' (UTC must be able to hold it)."""
    if isinstance(value, str):
        try:
            ts = iso_to_ts(value)
            if math.isfinite(ts):
                iso_to_ts(ts_to_iso(ts))
                return value
        except (ValueError, OverflowError, OSError):
            pass
    raise ValueError(f"{where}: expected an ISO 8601 date-time between the years 1 and 9999 (UTC), got {_shown(value)}")


def _validate_message(msg: Any, index: int, version: int) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(msg, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(msg).__name__}")
    c = _Checker(msg, where + ".", _MSG_FIELDS if version >= 3 else _MSG_FIELDS[:-1])
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
        "tool": c.dict_("tool", optional=True) if version >= 3 else None,
    }


def _check_tree(messages: Sequence[Mapping[str, Any]]) -> None:
    index: dict[str, int] = {}
    for i, m in enumerate(messages):
        if m["id"] in index:
            raise ValueError(f"messages[{i}].id: duplicate id {_shown(m['id'])} (also messages[{index[m['id']]}])")
        index[m["id"]] = i
    for i, m in enumerate(messages):
        parent = m["parent_id"]
        if parent is not None and parent not in index:
            raise ValueError(f"messages[{i}].parent_id: refers to unknown message {_shown(parent)}")
    reaches_root: set[str] = set()  # walk up from each message: a cycle never reaches a root (O(n) in all)
    for i, m in enumerate(messages):
        path: list[str] = []
        on_path: set[str] = set()
        node = m
        while node["id"] not in reaches_root:
            if node["id"] in on_path:
                raise ValueError(f"messages[{i}].parent_id: the parent chain loops back to {_shown(node['id'])}")
            path.append(node["id"])
            on_path.add(node["id"])
            if node["parent_id"] is None:
                break
            node = messages[index[node["parent_id"]]]
        reaches_root.update(path)
    groups: dict[str | None, list[int]] = {}
    for i, m in enumerate(messages):
        groups.setdefault(m["parent_id"], []).append(i)
    for parent, members in groups.items():
        active = [i for i in members if messages[i]["active"]]
        if len(active) != 1:
            where = "the root messages" if parent is None else f"the replies to {_shown(parent)}"
            raise ValueError(
                f"messages: exactly one of {where} must be active, found {len(active)} "
                f"(messages {', '.join(f'[{i}]' for i in members)})"
            )


def parents_first(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Order messages so every parent precedes its children, otherwise keeping the given order.

    Siblings keep their list order, so branches stay numbered as they were exported. One pass: a message whose
    parent is not placed yet waits for it and follows it as soon as it is.
    """
    placed: set[str] = set()
    waiting: dict[str, list[Mapping[str, Any]]] = {}
    out: list[Mapping[str, Any]] = []
    for m in messages:
        if m["parent_id"] is not None and m["parent_id"] not in placed:
            waiting.setdefault(m["parent_id"], []).append(m)
            continue
        stack = [m]
        while stack:
            node = stack.pop()
            out.append(node)
            placed.add(node["id"])
            stack.extend(reversed(waiting.pop(node["id"], [])))
    if waiting:
        raise ValueError("messages: parent references do not form a tree")
    return out
