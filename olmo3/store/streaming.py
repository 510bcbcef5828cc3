"""Streaming a reply into the store: buffered deltas committed about once a second, and who owns a stream.

A streamed message row is created at once (state 'streaming') and tagged with the opening store's *session*. A
session's liveness is an ``flock`` held on a small lock file, so a second store (another thread or process) marks
only the streams of *dead* sessions as interrupted when it opens the file (:meth:`StreamingMixin._recover_streams`).
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .records import FINAL_STATES, Channel, Role, State, check_dict, dump_json_opt, encode_token_ids, tool_search_text

try:  # POSIX only; without it every other session counts as dead (the pre-session behaviour).
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FLUSH_INTERVAL_S", "Sessions", "Stream", "StreamingMixin"]

FLUSH_INTERVAL_S: Final = 1.0


@dataclass(slots=True)
class Stream:
    """One message being streamed by this store: its text not committed yet."""

    conversation_id: str
    answer: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    last_commit: float = 0.0  # time.monotonic() when the last commit was *decided*

    def pending(self) -> tuple[str, str]:
        return "".join(self.answer), "".join(self.reasoning)

    def has_pending(self) -> bool:
        return bool(self.answer or self.reasoning)

    def clear(self) -> None:
        self.answer.clear()
        self.reasoning.clear()


class Sessions:
    """Liveness of store sessions through ``flock`` on ``<db>-sessions/<token>.lock``.

    The kernel drops an flock when its process dies (even on SIGKILL), and two opens of the same
    file conflict even inside one process, so "can I lock it?" answers "is that session dead?"
    for other threads and other processes alike.
    """

    STALE_AGE_S = 60.0  # never sweep a lock file younger than this (its owner may be starting)

    def __init__(self, db_path: Path) -> None:
        self.dir = db_path.with_name(db_path.name + "-sessions")
        self.token = uuid.uuid4().hex
        self._fd: int | None = None
        if fcntl is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._path(self.token)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd = fd

    def _path(self, token: str) -> Path:
        return self.dir / f"{token}.lock"

    def is_alive(self, token: str) -> bool:
        if token == self.token:
            return True
        if fcntl is None or not all(c in "0123456789abcdef" for c in token):
            return False
        try:
            fd = os.open(self._path(token), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            self._path(token).unlink(missing_ok=True)
            return False
        finally:
            os.close(fd)

    def sweep(self) -> None:
        """Remove lock files of sessions that died without streaming anything."""
        if fcntl is None:
            return
        now = time.time()
        for path in self.dir.glob("*.lock"):
            try:
                if now - path.stat().st_mtime > self.STALE_AGE_S:
                    self.is_alive(path.stem)
            except OSError:
                continue

    def close(self) -> None:
        if self._fd is not None:
            self._path(self.token).unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


class StreamingMixin:
    """Streaming and interrupted-stream recovery for :class:`olmo3.store.ConversationStore`."""

    # Provided by ConversationStore.
    flush_interval: float
    _conn: sqlite3.Connection
    _streams: dict[str, Stream]
    _sessions: Sessions | None

    if TYPE_CHECKING:

        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

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
        ) -> str: ...

    def begin_stream(
        self,
        conv_id: str,
        parent_id: str | None,
        role: Role = "assistant",
        provenance: Mapping[str, Any] | None = None,
        message_id: str | None = None,
    ) -> str:
        """Create the (empty, 'streaming') message row right away and return its id (``message_id`` if given)."""
        start = time.monotonic()
        with self._write():
            msg_id = self._insert_message(
                conv_id,
                parent_id,
                role,
                "",
                "",
                None,
                None,
                provenance,
                "streaming",
                stream_owner=self._sessions.token if self._sessions else None,
                message_id=message_id,
            )
        self._streams[msg_id] = Stream(conv_id, last_commit=start)
        return msg_id

    def stream_append(self, message_id: str, text_delta: str, channel: Channel = "answer") -> None:
        """Buffer a streamed delta; commit when the last commit was ``flush_interval`` ago.

        A delta is on disk at the latest with the first append or :meth:`flush_due` call made
        ``flush_interval`` after the previous commit, so while tokens flow nothing older than
        about a second can be lost. If tokens may pause, call :meth:`flush_due` from a timer.
        """
        stream = self._stream(message_id)
        if not isinstance(text_delta, str):
            raise ValueError(f"text_delta must be str, not {type(text_delta).__name__}")
        if channel == "answer":
            stream.answer.append(text_delta)
        elif channel == "reasoning":
            stream.reasoning.append(text_delta)
        else:
            raise ValueError(f"channel must be 'answer' or 'reasoning', not {channel!r}")
        now = time.monotonic()
        if now - stream.last_commit >= self.flush_interval:
            self._commit_stream(message_id, stream, now)

    def flush_due(self) -> int:
        """Commit streams whose last commit is ``flush_interval`` old; returns how many."""
        now = time.monotonic()
        due = [
            (mid, s)
            for mid, s in self._streams.items()
            if s.has_pending() and now - s.last_commit >= self.flush_interval
        ]
        for mid, stream in due:
            self._commit_stream(mid, stream, now)
        return len(due)

    def flush(self, message_id: str | None = None) -> None:
        """Commit buffered streamed text now (one stream, or all)."""
        now = time.monotonic()
        ids = [message_id] if message_id is not None else list(self._streams)
        for mid in ids:
            stream = self._stream(mid)
            if stream.has_pending():
                self._commit_stream(mid, stream, now)

    def _commit_stream(self, message_id: str, stream: Stream, decided_at: float) -> None:
        answer, reasoning = stream.pending()
        with self._write() as conn:
            conn.execute(
                "UPDATE messages SET content = content || ?, reasoning = reasoning || ? WHERE id = ?",
                (answer, reasoning, message_id),
            )
        stream.clear()
        stream.last_commit = decided_at

    def _stream(self, message_id: str) -> Stream:
        try:
            return self._streams[message_id]
        except KeyError:
            raise ValueError(f"message {message_id!r} is not being streamed by this store") from None

    def finish_stream(
        self,
        message_id: str,
        state: State = "complete",
        *,
        token_ids: Sequence[int] | None = None,
        stats: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        tool: Mapping[str, Any] | None = None,
    ) -> None:
        """Commit the rest of the text and the final state, token ids and stats (one transaction).

        ``provenance``, if given, replaces the one passed to :meth:`begin_stream`; ``tool`` (a reply's function
        calls) is set when given.
        """
        stream = self._stream(message_id)
        if state not in FINAL_STATES:
            raise ValueError(f"state must be one of {FINAL_STATES}, not {state!r}")
        check_dict(stats, "stats")
        check_dict(provenance, "provenance")
        check_dict(tool, "tool")
        answer, reasoning = stream.pending()
        with self._write() as conn:
            conn.execute(
                "UPDATE messages SET content = content || ?, reasoning = reasoning || ?, state = ?, "
                "token_ids = coalesce(?, token_ids), stats = coalesce(?, stats), "
                "provenance = coalesce(?, provenance), tool = coalesce(?, tool), "
                "tool_text = CASE WHEN ? IS NULL THEN tool_text ELSE ? END, stream_owner = NULL WHERE id = ?",
                (
                    answer,
                    reasoning,
                    state,
                    encode_token_ids(token_ids),
                    dump_json_opt(None if stats is None else dict(stats), "stats"),
                    dump_json_opt(None if provenance is None else dict(provenance), "provenance"),
                    dump_json_opt(None if tool is None else dict(tool), "tool"),
                    None if tool is None else 1,
                    tool_search_text(tool),
                    message_id,
                ),
            )
            conn.execute(
                "UPDATE conversations SET updated_at = ? WHERE id = ?",
                (time.time(), stream.conversation_id),
            )
        del self._streams[message_id]

    @property
    def streaming_ids(self) -> list[str]:
        """Messages this store is currently streaming."""
        return list(self._streams)

    def _recover_streams(self) -> None:
        """Mark messages left 'streaming' by dead sessions (crash, kill) as 'interrupted'."""
        owners = [
            row[0] for row in self._conn.execute("SELECT DISTINCT stream_owner FROM messages WHERE state = 'streaming'")
        ]
        sessions = self._sessions
        assert sessions is not None
        dead = [o for o in owners if o is None or not sessions.is_alive(o)]
        if dead:
            with self._write() as conn:
                for owner in dead:
                    conn.execute(
                        "UPDATE messages SET state = 'interrupted', stream_owner = NULL "
                        "WHERE state = 'streaming' AND stream_owner IS ?",
                        (owner,),
                    )
        sessions.sweep()

    def _forget_streams(self, conv_id: str) -> None:
        for mid in [m for m, s in self._streams.items() if s.conversation_id == conv_id]:
            del self._streams[mid]
