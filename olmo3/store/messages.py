"""The message tree of a conversation: appending (regenerate and edit are appends), reading, switching branches.

Messages form a tree. Each sibling group has exactly one *active* member (enforced by a partial unique index), so
the visible transcript is "follow the active child from the root", and every branch remembers which of its own
children was shown.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from olmo3.ids import new_id

from .records import (
    ROLES,
    STATES,
    Message,
    NotFoundError,
    Role,
    State,
    check_dict,
    dump_json_opt,
    encode_token_ids,
    load_json_opt,
    make_title,
    tool_search_text,
)
from .streaming import Stream

__all__ = ["MessagesMixin"]

_MSG_COLUMNS = (
    "id, conversation_id, parent_id, role, content, reasoning, token_ids, stats, provenance, state, created_at, "
    "active, tool"
)


class MessagesMixin:
    """The message tree of :class:`olmo3.store.ConversationStore`."""

    # Provided by ConversationStore.
    _conn: sqlite3.Connection
    _streams: dict[str, Stream]

    if TYPE_CHECKING:

        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...

        def _require_conversation(self, conv_id: str) -> None: ...

    def append_message(
        self,
        conv_id: str,
        parent_id: str | None,
        role: Role,
        content: str,
        *,
        reasoning: str = "",
        token_ids: Sequence[int] | None = None,
        stats: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        state: State = "complete",
        message_id: str | None = None,
        tool: Mapping[str, Any] | None = None,
    ) -> str:
        """Add a message under ``parent_id`` (None: a new root) and make it the active branch.

        Regenerate and edit are just appends under the same parent: the new message becomes a
        sibling of the old one and the shown branch. ``message_id``: an id made by the caller (the
        GUI shares one id per message with the chat engine); a fresh one otherwise. ``tool``: an assistant's
        function calls or an environment message's call and result (see :class:`olmo3.store.Message`).
        """
        if not isinstance(content, str) or not isinstance(reasoning, str):
            raise ValueError("content and reasoning must be str")
        with self._write():
            msg_id = self._insert_message(
                conv_id,
                parent_id,
                role,
                content,
                reasoning,
                token_ids,
                stats,
                provenance,
                state,
                message_id=message_id,
                tool=tool,
            )
            if role == "user":
                self._maybe_auto_title(conv_id, msg_id)
        return msg_id

    def _insert_message(
        self,
        conv_id: str,
        parent_id: str | None,
        role: str,
        content: str,
        reasoning: str,
        token_ids: Sequence[int] | None,
        stats: Mapping[str, Any] | None,
        provenance: Mapping[str, Any] | None,
        state: str,
        stream_owner: str | None = None,
        message_id: str | None = None,
        tool: Mapping[str, Any] | None = None,
    ) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, not {state!r}")
        check_dict(stats, "stats")
        check_dict(provenance, "provenance")
        check_dict(tool, "tool")
        conn = self._conn
        self._require_conversation(conv_id)
        if parent_id is not None:
            row = conn.execute("SELECT conversation_id FROM messages WHERE id = ?", (parent_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no message with id {parent_id!r}")
            if row[0] != conv_id:
                raise ValueError(f"message {parent_id!r} belongs to another conversation")
        now = time.time()
        if message_id is not None:
            if not isinstance(message_id, str) or not message_id or len(message_id) > 128:
                raise ValueError(f"bad message id {message_id!r}")
            if conn.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,)).fetchone() is not None:
                raise ValueError(f"message id {message_id!r} is already used")
        msg_id = message_id or new_id()
        conn.execute(
            "UPDATE messages SET active = 0 WHERE conversation_id = ? AND parent_id IS ? AND active = 1",
            (conv_id, parent_id),
        )
        conn.execute(
            "INSERT INTO messages (id, conversation_id, parent_id, role, content, reasoning, "
            "token_ids, stats, provenance, state, created_at, active, stream_owner, tool, tool_text) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
            (
                msg_id,
                conv_id,
                parent_id,
                role,
                content,
                reasoning,
                encode_token_ids(token_ids),
                dump_json_opt(None if stats is None else dict(stats), "stats"),
                dump_json_opt(None if provenance is None else dict(provenance), "provenance"),
                state,
                now,
                stream_owner,
                dump_json_opt(None if tool is None else dict(tool), "tool"),
                tool_search_text(tool),
            ),
        )
        conn.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conv_id))
        return msg_id

    def _maybe_auto_title(self, conv_id: str, msg_id: str) -> None:
        """Name the conversation after its first user message (unless renamed by the user).

        "First" means no user message above it: editing the first message (a new root) renames.
        """
        conn = self._conn
        if not conn.execute("SELECT title_is_auto FROM conversations WHERE id = ?", (conv_id,)).fetchone()[0]:
            return
        earlier_user = conn.execute(
            """WITH RECURSIVE up(id, parent_id, role) AS (
                   SELECT id, parent_id, role FROM messages WHERE id = ?
                   UNION ALL
                   SELECT m.id, m.parent_id, m.role FROM messages m JOIN up ON m.id = up.parent_id
               ) SELECT 1 FROM up WHERE role = 'user' AND id <> ? LIMIT 1""",
            (msg_id, msg_id),
        ).fetchone()
        if earlier_user is None:
            content = conn.execute("SELECT content FROM messages WHERE id = ?", (msg_id,)).fetchone()[0]
            conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (make_title(content), conv_id))

    def get_message(self, message_id: str) -> Message:
        row = self._conn.execute("SELECT conversation_id FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no message with id {message_id!r}")
        return self._messages(row[0], "AND id = ?", (message_id,))[0]

    def _sibling_positions(self, conv_id: str) -> dict[str, tuple[int, int]]:
        """id -> (index among its siblings, number of siblings), from a light id-only query.

        Done in Python: as a window-function CTE joined to the path, SQLite went quadratic.
        """
        groups: dict[str | None, list[str]] = {}
        for mid, parent in self._conn.execute(
            "SELECT id, parent_id FROM messages WHERE conversation_id = ? ORDER BY seq", (conv_id,)
        ):
            groups.setdefault(parent, []).append(mid)
        return {mid: (i, len(members)) for members in groups.values() for i, mid in enumerate(members)}

    def _messages(self, conv_id: str, where: str = "", args: Sequence[Any] = ()) -> list[Message]:
        """Messages of a conversation (``where`` adds conditions), in creation order."""
        with self._read() as conn:
            positions = self._sibling_positions(conv_id)
            rows = conn.execute(
                f"SELECT {_MSG_COLUMNS} FROM messages WHERE conversation_id = ? {where} ORDER BY seq",
                (conv_id, *args),
            ).fetchall()
        return [self._message(r, positions[r[0]]) for r in rows]

    def _message(self, row: Sequence[Any], position: tuple[int, int]) -> Message:
        content, reasoning = row[4], row[5]
        stream = self._streams.get(row[0])
        if stream is not None:  # show what is buffered but not yet committed
            pending_answer, pending_reasoning = stream.pending()
            content += pending_answer
            reasoning += pending_reasoning
        return Message(
            id=row[0],
            conversation_id=row[1],
            parent_id=row[2],
            role=row[3],
            content=content,
            reasoning=reasoning,
            token_ids=load_json_opt(row[6]),
            stats=load_json_opt(row[7]),
            provenance=load_json_opt(row[8]),
            state=row[9],
            created_at=row[10],
            active=bool(row[11]),
            sibling_index=position[0],
            sibling_count=position[1],
            tool=load_json_opt(row[12]),
        )

    def tree(self, conv_id: str) -> list[Message]:
        """Every message of the conversation, in creation order (parents before children)."""
        with self._read():
            self._require_conversation(conv_id)
            return self._messages(conv_id)

    def active_path(self, conv_id: str) -> list[Message]:
        """The shown transcript: from the active root, following the active child to a leaf."""
        with self._read():
            self._require_conversation(conv_id)
            active = {m.parent_id: m for m in self._messages(conv_id, "AND active = 1")}
        path: list[Message] = []
        node = active.get(None)
        while node is not None and len(path) <= len(active):
            path.append(node)
            node = active.get(node.id)
        return path

    def active_leaf(self, conv_id: str) -> Message | None:
        path = self.active_path(conv_id)
        return path[-1] if path else None

    def siblings(self, message_id: str) -> list[Message]:
        """The alternatives at this point of the tree (the message itself included), oldest first."""
        msg = self.get_message(message_id)
        return self._messages(msg.conversation_id, "AND parent_id IS ?", (msg.parent_id,))

    def children(self, message_id: str | None, conv_id: str | None = None) -> list[Message]:
        """Direct replies to a message (``message_id=None``: the roots of ``conv_id``)."""
        if message_id is None:
            if conv_id is None:
                raise ValueError("children(None) needs conv_id")
            return self._messages(conv_id, "AND parent_id IS NULL")
        msg = self.get_message(message_id)
        return self._messages(msg.conversation_id, "AND parent_id = ?", (message_id,))

    def set_active(self, message_id: str) -> None:
        """Show this branch: make the message and all its ancestors the active ones."""
        with self._write() as conn:
            chain = conn.execute(
                """WITH RECURSIVE up(id, parent_id, conversation_id) AS (
                       SELECT id, parent_id, conversation_id FROM messages WHERE id = ?
                       UNION ALL
                       SELECT m.id, m.parent_id, m.conversation_id
                       FROM messages m JOIN up ON m.id = up.parent_id
                   ) SELECT id, parent_id, conversation_id FROM up""",
                (message_id,),
            ).fetchall()
            if not chain:
                raise NotFoundError(f"no message with id {message_id!r}")
            for mid, parent, conv_id in chain:
                conn.execute(
                    "UPDATE messages SET active = 0 "
                    "WHERE conversation_id = ? AND parent_id IS ? AND active = 1 AND id <> ?",
                    (conv_id, parent, mid),
                )
                conn.execute("UPDATE messages SET active = 1 WHERE id = ?", (mid,))

    def switch_branch(self, message_id: str, offset: int) -> str:
        """Show the sibling ``offset`` places away (e.g. -1 / +1 from the ‹ › buttons); clamps."""
        sibs = self.siblings(message_id)
        index = next(i for i, m in enumerate(sibs) if m.id == message_id)
        target = sibs[max(0, min(len(sibs) - 1, index + offset))].id
        self.set_active(target)
        return target
