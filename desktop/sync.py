"""Keeping the conversation store's message tree in step with the engine's (Qt-free).

Two trees describe a conversation:

* the **engine's** (``TurnFinished.state``): token-exact, the one generation works on, but only usable while a
  model is loaded;
* the **store's** (:class:`olmo3.store.ConversationStore`): what the sidebar, search, export and the chat view
  read, available without a model, crash-safe while streaming.

After every turn :func:`sync_store_from_state` adds the engine's new nodes to the store and copies which branch is
active. Store messages carry the engine node id in ``provenance["engine_id"]`` where it was known when they were
written (replies); user messages are written before the engine has named them, so they are matched by
``(parent, role, content)``. Messages only the store has (a reply interrupted by a crash) stay in the store as
alternatives; they are never deleted.

:func:`view_messages` turns the store's active path into the dicts the chat view shows, and
:func:`state_from_store` builds an engine state for a conversation that has none (imported from elsewhere), so
the model still sees the history (its first turn then re-reads it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from desktop.formatting import format_stats

ENGINE_ID = "engine_id"


def _engine_nodes(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in state.get("nodes", []) if isinstance(n, dict) and "id" in n}


def _engine_children(state: dict[str, Any], nodes: dict[str, dict[str, Any]], node_id: str | None) -> list[str]:
    if node_id is None:
        return list(state.get("root_children", []))
    return list(nodes[node_id].get("children", []))


def _engine_active_index(state: dict[str, Any], nodes: dict[str, dict[str, Any]], node_id: str | None) -> int:
    return int(state.get("root_active", 0)) if node_id is None else int(nodes[node_id].get("active", 0))


def engine_order(state: dict[str, Any]) -> list[str]:
    """Engine node ids, parents before children."""
    nodes = _engine_nodes(state)
    out: list[str] = []
    stack = list(reversed(_engine_children(state, nodes, None)))
    while stack:
        node_id = stack.pop()
        if node_id not in nodes:
            continue
        out.append(node_id)
        stack.extend(reversed(_engine_children(state, nodes, node_id)))
    return out


def engine_active_path(state: dict[str, Any]) -> list[str]:
    nodes = _engine_nodes(state)
    path: list[str] = []
    parent: str | None = None
    while True:
        kids = [k for k in _engine_children(state, nodes, parent) if k in nodes]
        if not kids:
            return path
        idx = min(_engine_active_index(state, nodes, parent), len(kids) - 1)
        parent = kids[idx]
        path.append(parent)


def build_id_map(store_tree: Sequence[Any], state: dict[str, Any] | None) -> dict[str, str]:
    """engine node id → store message id, from provenance and, for the rest, ``(parent, role, content)``."""
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for msg in store_tree:
        engine_id = (msg.provenance or {}).get(ENGINE_ID) if isinstance(msg.provenance, dict) else None
        if engine_id:
            mapping[str(engine_id)] = msg.id
            used.add(msg.id)
    if not state:
        return mapping
    nodes = _engine_nodes(state)
    children_of: dict[str | None, list[Any]] = {}
    for msg in store_tree:
        children_of.setdefault(msg.parent_id, []).append(msg)
    for node_id in engine_order(state):
        if node_id in mapping:
            continue
        node = nodes[node_id]
        parent_engine = node.get("parent")
        if parent_engine is not None and parent_engine not in mapping:
            continue
        parent_store = mapping.get(parent_engine) if parent_engine is not None else None
        for msg in children_of.get(parent_store, []):
            if msg.id in used or msg.role != node.get("role"):
                continue
            if (msg.content or "") == (node.get("content") or ""):
                mapping[node_id] = msg.id
                used.add(msg.id)
                break
    return mapping


def sync_store_from_state(
    store: Any, conv_id: str, state: dict[str, Any], *, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Add the engine's missing nodes to the store and mirror its active branches; returns the id map.

    ``extra`` maps engine ids to store ids known from the current turn (the streamed reply's row).
    """
    tree = store.tree(conv_id)
    mapping = build_id_map(tree, state)
    if extra:
        mapping.update(extra)
    nodes = _engine_nodes(state)
    for node_id in engine_order(state):
        if node_id in mapping:
            continue
        node = nodes[node_id]
        parent_engine = node.get("parent")
        parent_store = mapping.get(parent_engine) if parent_engine is not None else None
        if parent_engine is not None and parent_store is None:
            continue  # cannot place it (should not happen: parents come first)
        finish = node.get("finish_reason")
        mapping[node_id] = store.append_message(
            conv_id,
            parent_store,
            node.get("role", "user"),
            node.get("content") or "",
            reasoning=node.get("reasoning") or "",
            token_ids=node.get("tokens") or None,
            stats=node.get("stats") if isinstance(node.get("stats"), dict) else None,
            provenance={ENGINE_ID: node_id},
            state="interrupted" if finish == "cancelled" else "complete",
        )
    # Make the store show the engine's active path.
    active = {m.id for m in store.active_path(conv_id)}
    for node_id in engine_active_path(state):
        sid = mapping.get(node_id)
        if sid is not None and sid not in active:
            store.set_active(sid)
            active = {m.id for m in store.active_path(conv_id)}
    return mapping


def align_state_with_store(state: dict[str, Any], store_tree: Sequence[Any]) -> dict[str, Any]:
    """A copy of ``state`` whose active branches follow the store's (the user may have switched branches while
    no model was loaded). Store-only messages cannot be selected in the engine and are ignored."""
    import copy

    state = copy.deepcopy(state)
    mapping = build_id_map(store_tree, state)
    active_store = {m.id for m in store_tree if getattr(m, "active", False)}
    nodes = _engine_nodes(state)
    for parent in [None, *engine_order(state)]:
        kids = [k for k in _engine_children(state, nodes, parent) if k in nodes]
        for idx, kid in enumerate(kids):
            if mapping.get(kid) in active_store:
                if parent is None:
                    state["root_active"] = idx
                else:
                    nodes[parent]["active"] = idx
                break
    return state


def state_from_store(store_tree: Sequence[Any], *, system_prompt: str | None, think: bool) -> dict[str, Any]:
    """An engine state rebuilt from store messages, without tokens (``olmo3.chat.session.state_from_messages``).

    Used for conversations imported without an engine state: the engine re-reads the history on the first
    turn (there are no tokens to reuse). Node ids are the store ids, so :func:`build_id_map` maps them.
    """
    from olmo3.chat.session import state_from_messages

    messages = []
    for msg in store_tree:
        stats = msg.stats if isinstance(msg.stats, dict) else None
        finish = (stats or {}).get("finish_reason") or ("cancelled" if msg.state == "interrupted" else "stop")
        messages.append(
            {
                "id": msg.id,
                "role": msg.role,
                "content": msg.content,
                "reasoning": msg.reasoning,
                "parent_id": msg.parent_id,
                "active": msg.active,
                "finish_reason": finish,
                "stats": stats,
            }
        )
    return state_from_messages(messages, system_prompt=system_prompt, think=think)


def view_messages(
    path: Iterable[Any],
    *,
    engine_messages: Sequence[dict[str, Any]] | None = None,
    id_map: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Chat-view dicts from the store's active path (system messages left out).

    ``engine_messages``/``id_map`` add what only the engine knows (whether a turn is still in the context).
    """
    in_context: dict[str, bool] = {}
    if engine_messages and id_map:
        for em in engine_messages:
            sid = id_map.get(str(em.get("id")))
            if sid is not None:
                in_context[sid] = bool(em.get("in_context", True))
    out: list[dict[str, Any]] = []
    turn = -1
    for msg in path:
        if msg.role == "system":
            continue
        if msg.role == "user":
            turn += 1
        stats = msg.stats if isinstance(msg.stats, dict) else None
        provenance = msg.provenance if isinstance(msg.provenance, dict) else {}
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
            "error": provenance.get("error") if msg.state == "error" else None,
            "in_context": in_context.get(msg.id, True),
        }
        out.append(item)
    return out
