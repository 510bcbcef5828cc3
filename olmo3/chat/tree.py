"""The conversation tree: messages with branches, the active path, and how a message looks to a reader (MLX-free).

Regenerate adds a sibling reply; edit adds a sibling user message; nothing is erased, and each node remembers which
child is on the active path. :class:`Node` is the session's working copy of a message (:class:`NodeState` its saved,
frozen form); :class:`ConversationTree` holds the nodes and the tree operations that :class:`olmo3.chat.session.
ChatSession` builds its turns on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ids import new_id
from .transcript import BranchKind, FinishReason, NodeState, Provenance, Role, TranscriptMessage, TurnStats


def _raw(text: str, prompt_text: str | None) -> str:
    """A user message's rendered content: ``prompt_text`` when given (documents + the text), else the text."""
    if prompt_text is None:
        return text
    if not isinstance(prompt_text, str) or not prompt_text.strip():
        raise ValueError("prompt_text must be non-empty text")
    return prompt_text


@dataclass
class Node:
    """A message in the conversation tree (the session's working copy; :class:`NodeState` is its saved form)."""

    id: str
    role: Role
    content: str  # what is shown: the user's text, or the answer (reasoning removed)
    raw: str  # what the chat template renders as this message's content
    parent: str | None  # None: a first user message (child of the conversation root)
    reasoning: str | None = None
    tokens: list[int] = field(default_factory=list)  # assistant: the sampled ids, stop token included
    children: list[str] = field(default_factory=list)
    active: int = 0  # which child is on the active path
    finish_reason: FinishReason | None = None
    stats: TurnStats | None = None
    think: bool = False
    provenance: Provenance | None = None
    calls: str | None = None  # assistant: its function calls, verbatim (see olmo3.chat.tool_turns)
    tool: dict[str, Any] | None = None  # the calls parsed, or an environment turn's call and result

    def freeze(self) -> NodeState:
        return NodeState(
            id=self.id,
            role=self.role,
            content=self.content,
            raw=self.raw,
            parent=self.parent,
            reasoning=self.reasoning,
            tokens=tuple(self.tokens),
            children=tuple(self.children),
            active=self.active,
            finish_reason=self.finish_reason,
            stats=self.stats,
            think=self.think,
            provenance=self.provenance,
            calls=self.calls,
            tool=self.tool,
        )

    @classmethod
    def thaw(cls, n: NodeState) -> Node:
        return cls(
            id=n.id,
            role=n.role,
            content=n.content,
            raw=n.raw,
            parent=n.parent,
            reasoning=n.reasoning,
            tokens=list(n.tokens),
            children=list(n.children),
            active=n.active,
            finish_reason=n.finish_reason,
            stats=n.stats,
            think=n.think,
            provenance=n.provenance,
            calls=n.calls,
            tool=dict(n.tool) if n.tool is not None else None,
        )


class ConversationTree:
    """The message tree of one conversation: ``nodes`` by id, the first user messages under the root."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.root_children: list[str] = []
        self.root_active = 0
        self.drop_turns = 0  # oldest user turns left out of the prompt (the overflow policy)

    def _children(self, node_id: str | None) -> list[str]:
        return self.root_children if node_id is None else self.nodes[node_id].children

    def _active_child(self, node_id: str | None) -> str | None:
        kids = self._children(node_id)
        if not kids:
            return None
        idx = self.root_active if node_id is None else self.nodes[node_id].active
        return kids[min(idx, len(kids) - 1)]

    def _set_active(self, child: Node) -> None:
        kids = self._children(child.parent)
        idx = kids.index(child.id)
        if child.parent is None:
            self.root_active = idx
        else:
            self.nodes[child.parent].active = idx

    def _add(self, node: Node) -> Node:
        self.nodes[node.id] = node
        self._children(node.parent).append(node.id)
        self._set_active(node)
        return node

    def _remove(self, node: Node) -> None:
        kids = self._children(node.parent)
        kids.remove(node.id)
        del self.nodes[node.id]
        if node.parent is None:
            self.root_active = max(0, len(kids) - 1)
        else:
            self.nodes[node.parent].active = max(0, len(kids) - 1)

    def active_path(self) -> list[Node]:
        path, cur = [], self._active_child(None)
        while cur is not None:
            path.append(self.nodes[cur])
            cur = self._active_child(cur)
        return path

    def _path_to(self, node: Node) -> list[Node]:
        path = [node]
        while path[-1].parent is not None:
            path.append(self.nodes[path[-1].parent])
        return path[::-1]

    def user_nodes(self) -> list[Node]:
        """The user messages of the active path, oldest first (``user_turn_index`` counts these)."""
        return [n for n in self.active_path() if n.role == "user"]

    @property
    def messages(self) -> tuple[TranscriptMessage, ...]:
        """The active conversation: role, content, reasoning (Think), plus branch positions for the UI."""
        out, turn = [], -1
        for n in self.active_path():
            if n.role == "user":
                turn += 1
            out.append(self._message(n, turn))
        return tuple(out)

    def _message(self, n: Node, user_turn_index: int) -> TranscriptMessage:
        siblings = self._children(n.parent)
        return TranscriptMessage(
            id=n.id,
            role=n.role,
            content=n.content,
            reasoning=n.reasoning,
            parent_id=n.parent,
            user_turn_index=user_turn_index,
            branch_index=siblings.index(n.id),
            branch_count=len(siblings),
            finish_reason=n.finish_reason,
            stats=n.stats,
            tokens=tuple(n.tokens),
            in_context=user_turn_index >= self.drop_turns,
            provenance=n.provenance,
            calls=n.calls,
            tool=n.tool,
        )

    def branches(self, user_turn_index: int) -> dict[str, tuple[int, int]]:
        """``{"user": (active, count), "reply": (active, count)}`` for user turn ``i`` (edits / regenerations)."""
        u = self.user_node(user_turn_index)
        siblings = self._children(u.parent)
        reply = (min(u.active, max(len(u.children) - 1, 0)), len(u.children))
        return {"user": (siblings.index(u.id), len(siblings)), "reply": reply}

    def switch_branch(self, user_turn_index: int, index: int, which: BranchKind = "reply") -> None:
        u = self.user_node(user_turn_index)
        if which == "user":
            kids = self._children(u.parent)
            if not 0 <= index < len(kids):
                raise IndexError(f"user turn {user_turn_index} has {len(kids)} version(s); no #{index}")
            self._set_active(self.nodes[kids[index]])
        elif which == "reply":
            if not 0 <= index < len(u.children):
                raise IndexError(f"user turn {user_turn_index} has {len(u.children)} repl(ies); no #{index}")
            u.active = index
        else:
            raise ValueError(f"which={which!r}: expected 'reply' or 'user'")

    def new_user_node(
        self, text: str, *, prompt_text: str | None = None, message_id: str | None = None, replacing: int | None = None
    ) -> Node:
        """A user message to send after the active path's last message or, with ``replacing=i``, beside user turn
        ``i`` as its edit (not yet added). ``prompt_text``: what the model reads as this message when it differs from
        the shown ``text`` (attached documents, then the text). ValueError for an empty message."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the message is empty")
        if replacing is None:
            path = self.active_path()
            parent = path[-1].id if path else None
        else:
            parent = self.user_node(replacing).parent
        raw = _raw(text, prompt_text)
        return Node(id=self.fresh_id(message_id), role="user", content=text, raw=raw, parent=parent)

    def last_user_node(self) -> Node:
        """The user message a regeneration answers again; ValueError when there is none."""
        users = self.user_nodes()
        if not users:
            raise ValueError("nothing to regenerate: the conversation has no user message")
        return users[-1]

    def user_node(self, i: int) -> Node:
        """User turn ``i`` of the active path; IndexError naming the count if there is none."""
        users = self.user_nodes()
        if not 0 <= i < len(users):
            raise IndexError(f"user turn {i} does not exist (the conversation has {len(users)})")
        return users[i]

    def _path_to_parent(self, user: Node) -> list[Node]:
        return self._path_to(self.nodes[user.parent]) if user.parent is not None else []

    def _turn_index(self, node: Node) -> int:
        return sum(1 for n in self._path_to(node) if n.role == "user") - 1

    def fresh_id(self, wanted: str | None) -> str:
        """A new node's id: ``wanted`` (the store's id), or a new one when None; ValueError if empty or taken."""
        if wanted is None:
            return new_id()
        if not isinstance(wanted, str) or not wanted or wanted in self.nodes:
            raise ValueError(f"message id {wanted!r} is empty or already used in this conversation")
        return wanted
