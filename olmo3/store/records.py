"""The store's value objects, errors and small pure helpers (no database access here)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "DEFAULT_TITLE",
    "FINAL_STATES",
    "ROLES",
    "STATES",
    "TITLE_LIMIT",
    "Channel",
    "Conversation",
    "DamagedStoreError",
    "Message",
    "NewerStoreError",
    "NotAStoreError",
    "NotFoundError",
    "Role",
    "SearchHit",
    "State",
    "StoreError",
    "check_dict",
    "dump_json",
    "dump_json_opt",
    "encode_token_ids",
    "load_json_opt",
    "make_title",
    "tool_search_text",
]

DEFAULT_TITLE: Final = "New conversation"
TITLE_LIMIT: Final = 60

# "environment": a tool's result (Olmo-3's template writes it as an environment turn after the call).
Role = Literal["system", "user", "assistant", "environment"]
State = Literal["streaming", "complete", "interrupted", "error"]
Channel = Literal["answer", "reasoning"]
ROLES: Final = ("system", "user", "assistant", "environment")
STATES: Final = ("streaming", "complete", "interrupted", "error")
FINAL_STATES: Final = ("complete", "interrupted", "error")


class StoreError(Exception):
    """The database cannot be used as a conversation store (wrong file, newer schema, ...)."""


class NotAStoreError(StoreError):
    """Refused: not an SQLite file, or another program's SQLite file. The file was left untouched."""


class NewerStoreError(StoreError):
    """Refused: written by a newer Olmo Desktop (schema) or a newer SQLite (file format). Left untouched."""


class DamagedStoreError(StoreError):
    """A conversation store whose pages are damaged; the message names the file and the way out."""


class NotFoundError(StoreError, LookupError):
    """A conversation or message id that is not in the store."""


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
    # Tool data: an assistant's function calls ({"calls": [{"name", "arguments"}], "raw_calls"}) or, for an
    # environment message, the call it answers and how it went ({"name", "server", "arguments", "is_error", ...}).
    tool: dict[str, Any] | None = None


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


def dump_json(value: Any, what: str) -> str:
    """Compact JSON text for a column; ``ValueError`` naming ``what`` if it is not plain JSON."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable (no NaN/inf): {exc}") from None


def dump_json_opt(value: Any, what: str) -> str | None:
    return None if value is None else dump_json(value, what)


def load_json_opt(text: str | None) -> Any:
    """A JSON column's value (untyped JSON), or None for NULL."""
    return None if text is None else json.loads(text)


def check_dict(value: Any, what: str) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a dict or None, not {type(value).__name__}")


def tool_search_text(tool: Mapping[str, Any] | None) -> str:
    """What search finds in a message's tool data: each call's name and arguments, or the tool a result is from."""
    if not tool:
        return ""
    parts: list[str] = []
    calls = tool.get("calls")
    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, Mapping):
            parts.append(str(call.get("name") or ""))
            arguments = call.get("arguments")
            if isinstance(arguments, Mapping):
                parts += [f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items()]
    for key in ("name", "server"):
        if isinstance(tool.get(key), str):
            parts.append(tool[key])
    arguments = tool.get("arguments")
    if not isinstance(calls, list) and isinstance(arguments, Mapping):
        parts += [f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items()]
    return " ".join(p for p in parts if p)


def encode_token_ids(token_ids: Sequence[int] | None) -> str | None:
    """Token ids as a JSON list; ``ValueError`` for anything but non-negative ints."""
    if token_ids is None:
        return None
    ids = list(token_ids)
    for i, t in enumerate(ids):
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"token_ids[{i}] must be a non-negative int, not {t!r}")
    return json.dumps(ids, separators=(",", ":"))
