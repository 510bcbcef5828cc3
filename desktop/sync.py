"""Keeping the conversation store's message tree in step with the engine's (Qt-free).

Two trees describe a conversation:

* the **engine's** (:class:`olmo3.chat.transcript.TranscriptState`): token-exact, the one generation works on, only
  usable while a model is loaded;
* the **store's** (:class:`olmo3.store.ConversationStore`): what the sidebar, search, export and the chat view read,
  available without a model, crash-safe while streaming.

**One id per message.** The GUI writes a message to the store under an id it made, and hands the same id to the
engine (``message_id``/``reply_id``), so an engine node id *is* a store row id and nothing is ever matched by
content. After a turn :func:`sync_store_from_state` adds any engine node the store lacks (normally none) and copies
which branch is active. Messages only the store has (a reply interrupted by a crash) stay in the store as
alternatives; they are never deleted.

:func:`adopt_store_ids` converts a state saved before ids were shared (v0.1: engine ids mapped through
``provenance["engine_id"]`` and, for user messages, by ``(parent, role, content)``); it runs once per such
conversation, when it is opened.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from desktop.formatting import format_stats
from olmo3.chat.transcript import (
    HistoryMessage,
    NodeState,
    TranscriptError,
    TranscriptMessage,
    TranscriptState,
    TurnStats,
    state_from_messages,
)
from olmo3.docs.turn import from_provenance

log = logging.getLogger(__name__)
LEGACY_ENGINE_ID = "engine_id"


def sync_store_from_state(store: Any, conv_id: str, state: TranscriptState) -> None:
    """Add the engine's nodes the store lacks (parents first) and make the store show the engine's active path."""
    known = {m.id for m in store.tree(conv_id)}
    by_id = {n.id: n for n in state.nodes}
    for node in _parents_first(state):
        if node.id in known or (node.parent is not None and node.parent not in known):
            continue
        store.append_message(
            conv_id,
            node.parent,
            node.role,
            node.content,
            reasoning=node.reasoning or "",
            token_ids=list(node.tokens) or None,
            stats=node.stats.to_dict() if node.stats else None,
            state="interrupted" if node.finish_reason == "cancelled" else "complete",
            message_id=node.id,
            tool=node.tool,
        )
        known.add(node.id)
    active = {m.id for m in store.active_path(conv_id)}
    for node in state.active_path():
        if node.id in by_id and node.id in known and node.id not in active:
            store.set_active(node.id)
            active = {m.id for m in store.active_path(conv_id)}


def align_state_with_store(state: TranscriptState, store_tree: Sequence[Any]) -> TranscriptState:
    """``state`` with its active branches following the store's (the user may have switched branches while no model
    was loaded). Store-only messages cannot be selected in the engine and are ignored."""
    active_ids = {m.id for m in store_tree if getattr(m, "active", False)}

    def pick(children: Sequence[str], current: int) -> int:
        return next((i for i, kid in enumerate(children) if kid in active_ids), current)

    nodes = tuple(dataclasses.replace(n, active=pick(n.children, n.active)) for n in state.nodes)
    return dataclasses.replace(state, nodes=nodes, root_active=pick(state.root_children, state.root_active))


def state_from_store(store_tree: Sequence[Any], *, system_prompt: str | None, think: bool) -> TranscriptState:
    """An engine state rebuilt from store messages, without tokens (a conversation imported from elsewhere).

    The engine re-reads the history on the first turn (there are no tokens to reuse). Node ids are the store ids.
    """
    messages = []
    for msg in store_tree:
        stats = _stats(msg.stats)
        finish = stats.finish_reason if stats else ("cancelled" if msg.state == "interrupted" else "stop")
        messages.append(
            HistoryMessage(
                id=msg.id,
                role=msg.role,
                content=msg.content,
                reasoning=msg.reasoning,
                parent_id=msg.parent_id,
                active=msg.active,
                finish_reason=finish,
                stats=stats,
                tool=getattr(msg, "tool", None),
            )
        )
    return state_from_messages(messages, system_prompt=system_prompt, think=think)


def adopt_store_ids(state: TranscriptState, store_tree: Sequence[Any]) -> TranscriptState:
    """A v0.1 state whose node ids were the engine's own, renamed to the store's ids (see the module docstring).

    Nodes that match no store row keep their id (the next sync adds them to the store).
    """
    store_ids = {m.id for m in store_tree}
    if all(n.id in store_ids for n in state.nodes):
        return state
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for msg in store_tree:
        engine_id = msg.provenance.get(LEGACY_ENGINE_ID) if isinstance(msg.provenance, dict) else None
        if engine_id:
            mapping[str(engine_id)] = msg.id
            used.add(msg.id)
    children_of: dict[str | None, list[Any]] = {}
    for msg in store_tree:
        children_of.setdefault(msg.parent_id, []).append(msg)
    for node in _parents_first(state):
        if node.id in mapping or node.id in store_ids:
            continue
        if node.parent is not None and node.parent not in mapping and node.parent not in store_ids:
            continue
        parent_store = mapping.get(node.parent, node.parent) if node.parent is not None else None
        for msg in children_of.get(parent_store, []):
            if msg.id not in used and msg.role == node.role and (msg.content or "") == node.content:
                mapping[node.id] = msg.id
                used.add(msg.id)
                break

    def rename(node_id: str) -> str:
        return mapping.get(node_id, node_id)

    nodes = tuple(
        dataclasses.replace(
            n,
            id=rename(n.id),
            parent=rename(n.parent) if n.parent is not None else None,
            children=tuple(rename(c) for c in n.children),
        )
        for n in state.nodes
    )
    return dataclasses.replace(state, nodes=nodes, root_children=tuple(rename(c) for c in state.root_children))


def view_messages(
    path: Iterable[Any], *, engine_messages: Sequence[TranscriptMessage] | None = None
) -> list[dict[str, Any]]:
    """Chat-view dicts from the store's active path (system messages left out).

    ``engine_messages`` add what only the engine knows (whether a turn is still in the context). A user message
    carries the ``documents`` its turn used (its chips); the replies to it carry them as ``sources``. A reply that
    only called tools (no text) is left out: its tool cards show the calls (unless it has alternatives to switch to).
    """
    in_context = {m.id: m.in_context for m in engine_messages or ()}
    out: list[dict[str, Any]] = []
    turn = -1
    documents: list[Any] = []
    for msg in path:
        if msg.role == "system":
            continue
        if msg.role == "user":
            turn += 1
            documents = from_provenance(msg.provenance if isinstance(msg.provenance, dict) else None)
        stats = msg.stats if isinstance(msg.stats, dict) else None
        provenance = msg.provenance if isinstance(msg.provenance, dict) else {}
        tool = msg.tool if isinstance(getattr(msg, "tool", None), dict) else None
        calls_only = msg.role == "assistant" and tool is not None and tool.get("calls") and not msg.content
        if calls_only and not msg.reasoning and msg.sibling_count == 1 and msg.state == "complete":
            continue
        finish = (stats or {}).get("finish_reason")
        if msg.state == "interrupted":
            finish = "cancelled"
        item: dict[str, Any] = {
            "sid": msg.id,
            "role": msg.role,
            "content": msg.content,
            "reasoning": msg.reasoning or "",
            "user_turn_index": max(turn, 0),
            "branch_index": msg.sibling_index,
            "branch_count": msg.sibling_count,
            "finish_reason": finish if msg.role == "assistant" else None,
            "state": msg.state,
            "stats": stats,
            "stats_text": format_stats(stats) if stats and msg.role == "assistant" else "",
            "thought_s": provenance.get("thought_s"),
            "provenance": provenance if msg.role == "assistant" else None,
            "error": provenance.get("error") if msg.state == "error" else None,
            "in_context": in_context.get(msg.id, True),
            "tool": tool,
            "documents" if msg.role == "user" else "sources": list(documents),
        }
        out.append(item)
    return out


def _parents_first(state: TranscriptState) -> list[NodeState]:
    by_id = {n.id: n for n in state.nodes}
    out: list[NodeState] = []
    stack = [c for c in reversed(state.root_children) if c in by_id]
    while stack:
        node = by_id[stack.pop()]
        out.append(node)
        stack.extend(c for c in reversed(node.children) if c in by_id)
    return out


def _stats(value: Any) -> TurnStats | None:
    if not isinstance(value, dict):
        return None
    try:
        return TurnStats.from_dict(value)
    except ValueError:
        return None


# ---- the engine's view of a conversation, read back from the store (the GUI's questions about a turn) ----------
def user_count(store: Any, conv_id: str) -> int:
    return sum(1 for m in store.active_path(conv_id) if m.role == "user")


def engine_state(store: Any, conv_id: str) -> TranscriptState | None:
    """The engine state saved with a conversation; None (logged) when there is none or it cannot be read."""
    data = store.get_engine_state(conv_id)
    if data is None:
        return None
    try:
        return TranscriptState.from_json(data)
    except TranscriptError as e:
        log.warning("conversation %s: unreadable engine state (%s); it is rebuilt from the messages", conv_id, e)
        return None


def engine_last_user_id(store: Any, conv_id: str) -> str | None:
    """The last user message on the engine's active path (what a regenerate answers again)."""
    state = engine_state(store, conv_id)
    users = [n for n in state.active_path() if n.role == "user"] if state is not None else []
    return users[-1].id if users else None


def engine_leaf_id(store: Any, conv_id: str) -> str | None:
    """The message a new user message goes under: the shown leaf when the engine knows it (normal case, also
    right after a branch switch), else the engine's own last message."""
    leaf = store.active_leaf(conv_id)
    if leaf is None:
        return None
    state = engine_state(store, conv_id)
    if state is None or state.node(leaf.id) is not None:
        return str(leaf.id)
    path = state.active_path()
    return path[-1].id if path else None
