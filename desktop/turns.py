"""Recording a turn in the conversation store as the engine reports it (Qt-free, testable without widgets).

One turn's rows follow the engine's events:

1. The controller makes the ids (``user_id`` for a new user message, ``reply_id`` for the reply) and hands them to
   the engine with the job, so the engine's messages and the store's rows share ids.
2. The first streamed token proves the engine accepted the turn (no context overflow, not cancelled during
   prefill): only then are the user message and a *streaming* reply row written, so a cancelled or refused turn
   leaves no half-written rows.
3. Every ``TextDelta`` is appended to the streaming row (committed about once a second: crash-safe).
4. ``TurnFinished`` finishes the row (complete or interrupted, token ids, stats, and the full provenance: every
   setting, the seed actually used, the model's repo, revision and fingerprint, template hash, budget, KV bits,
   engine version, how the cache was reconciled), saves the engine's state and mirrors its tree into the store
   (:func:`desktop.sync.sync_store_from_state`).

A turn with tools has several replies: each ``ToolRoundFinished`` finishes the reply that called tools (with its
calls in the row's ``tool`` data), each ``ToolCallFinished`` adds the tool's result as an ``environment`` message,
and ``ToolRoundStarted`` names the next reply (made by the engine: the store takes its id), whose row opens at its
first token like the first one's.

Documents: before a turn starts, :func:`plan_documents` decides what its user message carries (attachments sent with
it, and those the turns above it used), whole or as passages, against the context that is left. The engine gets the
plan's ``prompt_text`` (what the model reads); the store gets the message as typed, with the plan recorded in its
provenance, and the composer's attachments it carried are bound to it when its row is written.

``ChatController`` owns a :class:`TurnRecorder` and does the view side of the same events.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from desktop import sync
from olmo3.chat.events import TextDelta, ToolCallFinished, ToolRoundFinished, ToolRoundStarted, TurnFinished
from olmo3.chat.transcript import OverflowPolicy, TranscriptState
from olmo3.docs.prompt import TurnAttachment, format_passages, format_user_turn, format_whole
from olmo3.docs.turn import TurnPlan, documents_on_path, from_provenance, remaining_context

TurnKind = Literal["send", "regenerate", "edit"]


@dataclass
class Turn:
    """The generation in progress."""

    job_id: int
    conv_id: str
    kind: TurnKind
    user_id: str  # the user message this turn answers (new for send/edit, existing for regenerate and retries)
    reply_id: str
    new_user: bool  # the user row is written at the first token
    parent_id: str | None = None  # store parent of a new user message
    text: str = ""
    user_turn_index: int = 0
    overflow: OverflowPolicy = "error"
    started: float = field(default_factory=time.monotonic)
    reasoning_started: float | None = None
    reasoning_s: float | None = None
    rows_written: bool = False
    reply_parent: str | None = None  # a later reply of a tool turn goes under the last tool result, not the user
    stream_open: bool = False  # the reply row is being streamed
    prompt_text: str | None = None  # what the model reads, when the message carries documents
    documents: tuple[TurnAttachment, ...] = ()  # what each document contributed to this turn
    attachment_ids: tuple[int, ...] = ()  # composer attachments sent with the message (bound when its row is written)

    def use_plan(self, plan: TurnPlan, attachment_ids: tuple[int, ...] = ()) -> None:
        self.prompt_text = plan.prompt_text if plan.attachments else None
        self.documents = plan.attachments
        self.attachment_ids = attachment_ids

    def provenance(self) -> dict[str, Any] | None:
        return TurnPlan(self.text, self.prompt_text or self.text, self.documents).provenance()


def restore_prompt_texts(state: TranscriptState, store: Any, conv_id: str) -> TranscriptState:
    """A state rebuilt from store rows (no engine state: an import, or an unreadable one) with each user message's
    documents put back into its rendered text, from its recorded turn: exactly the text the model read then."""
    nodes = []
    for node in state.nodes:
        documents = []
        if node.role == "user":
            try:
                documents = from_provenance(store.get_message(node.id).provenance)
            except LookupError:
                documents = []
        blocks = []
        for a in documents:
            if a.mode == "whole" and a.attachment_id is not None:
                try:
                    blocks.append(format_whole(store.attachment_document(a.attachment_id)))
                except LookupError:
                    continue  # the document is gone: the message goes without it
            elif a.passages:
                blocks.append(format_passages(a.name, a.passages, page_count=a.pages))
        nodes.append(dataclasses.replace(node, raw=format_user_turn(node.content, blocks)) if blocks else node)
    return dataclasses.replace(state, nodes=tuple(nodes))


def _ancestors(store: Any, conv_id: str, parent_id: str | None) -> list[Any]:
    """The stored messages from the root down to ``parent_id`` (the turns above a new user message)."""
    if parent_id is None:
        return []
    path = store.active_path(conv_id)
    ids = [m.id for m in path]
    if parent_id in ids:
        return path[: ids.index(parent_id) + 1]
    by_id = {m.id: m for m in store.tree(conv_id)}
    chain: list[Any] = []
    node = by_id.get(parent_id)
    while node is not None and len(chain) <= len(by_id):
        chain.append(node)
        node = by_id.get(node.parent_id) if node.parent_id is not None else None
    return chain[::-1]


def plan_documents(
    store: Any,
    conv_id: str,
    text: str,
    *,
    parent_id: str | None,
    new_ids: tuple[int, ...] = (),
    carried_from: str | None = None,
    in_context: dict[str, bool] | None = None,
    context: tuple[int, int],
    max_tokens: int,
) -> TurnPlan:
    """The documents of a user message about to be sent under ``parent_id`` (Qt-free; milliseconds).

    It considers the composer's attachments sent with it (``new_ids``), those a message it replaces used
    (``carried_from``: an edit, or a retry of a stored message), and those the user turns above it used; a document
    already in the transcript whole (in a turn still in context, per ``in_context``) is left out. ``context`` is the
    engine's (used, limit); ``max_tokens`` the reply's maximum length.
    """
    above = [m for m in _ancestors(store, conv_id, parent_id) if m.role == "user"]
    flags = in_context or {}
    used, whole = documents_on_path((m.provenance, flags.get(m.id, True)) for m in above)
    carried: list[int] = []
    if carried_from is not None:
        carried = [
            a.attachment_id
            for a in from_provenance(store.get_message(carried_from).provenance)
            if a.attachment_id is not None
        ]
    ids = [*used, *carried, *new_ids]
    if not ids:
        return TurnPlan(text, text)
    return store.plan_turn(
        conv_id, text, ids, remaining_context=remaining_context(context[1], context[0], max_tokens), in_transcript=whole
    )


class TurnRecorder:
    """Writes turns to the store; see the module docstring."""

    def __init__(self, store: Any, model_name: Callable[[], str | None]) -> None:
        self.store = store
        self._model_name = model_name

    def _provenance(self) -> dict[str, Any]:
        return {"model": self._model_name() or None}

    def ensure_rows(self, turn: Turn) -> bool:
        """Write the user message (if new) and open the streaming reply row; True the first time."""
        if turn.rows_written:
            return False
        if turn.new_user:
            self.store.append_message(
                turn.conv_id, turn.parent_id, "user", turn.text, provenance=turn.provenance(), message_id=turn.user_id
            )
            self.store.bind_attachments(turn.attachment_ids, turn.user_id)
        parent = turn.reply_parent or turn.user_id
        self.store.begin_stream(turn.conv_id, parent, provenance=self._provenance(), message_id=turn.reply_id)
        turn.rows_written = turn.stream_open = True
        return True

    def on_delta(self, turn: Turn, event: TextDelta) -> None:
        self.ensure_rows(turn)
        now = time.monotonic()
        if event.channel == "reasoning" and turn.reasoning_started is None:
            turn.reasoning_started = now
        elif event.channel != "reasoning" and turn.reasoning_started is not None and turn.reasoning_s is None:
            turn.reasoning_s = now - turn.reasoning_started
        self.store.stream_append(turn.reply_id, event.text, "reasoning" if event.channel == "reasoning" else "answer")

    def on_finished(self, turn: Turn, event: TurnFinished) -> bool:
        """Finish the rows; False when the turn was cancelled before its first token (nothing is kept)."""
        reply = event.reply
        if reply is None:
            if turn.stream_open:
                self.store.finish_stream(turn.reply_id, "interrupted")
                turn.stream_open = False
            return False
        if reply.id == turn.reply_id:  # else: a tool turn stopped after its last reply was recorded
            self._finish_reply(turn, event.reply, event.stats)
        elif turn.stream_open:
            self.store.finish_stream(turn.reply_id, "interrupted")
            turn.stream_open = False
        self.store.set_engine_state(turn.conv_id, event.state.to_json())
        sync.sync_store_from_state(self.store, turn.conv_id, event.state)
        return True

    def _finish_reply(self, turn: Turn, reply: Any, stats: Any, *, tool: dict[str, Any] | None = None) -> None:
        self.ensure_rows(turn)
        if not turn.stream_open:
            return
        # Everything the reply was made with (olmo3.chat.transcript.Provenance), plus the name the user saw.
        made_with = reply.provenance.to_dict() if reply.provenance is not None else {}
        provenance = {**made_with, **self._provenance()}
        if turn.reasoning_started is not None:
            spent = turn.reasoning_s if turn.reasoning_s is not None else time.monotonic() - turn.reasoning_started
            provenance["thought_s"] = round(spent, 1)
        finish = reply.finish_reason or stats.finish_reason
        self.store.finish_stream(
            turn.reply_id,
            "interrupted" if finish == "cancelled" else "complete",
            token_ids=list(reply.tokens) or None,
            stats=stats.to_dict(),
            provenance=provenance,
            tool=tool,
        )
        turn.stream_open = False

    # --- tool turns -------------------------------------------------------------------------------------------
    def on_round_finished(self, turn: Turn, event: ToolRoundFinished) -> None:
        """A reply that called tools: finish its row with its calls (the tool data)."""
        self._finish_reply(turn, event.reply, event.stats, tool=event.reply.tool)

    def on_call_finished(self, turn: Turn, event: ToolCallFinished) -> None:
        """A tool's result: an environment message under the reply (or the previous result)."""
        message = event.message
        self.store.append_message(
            turn.conv_id, event.parent_id, "environment", message.content, tool=message.tool, message_id=event.call_id
        )

    def on_round_started(self, turn: Turn, event: ToolRoundStarted) -> None:
        """The next reply of the turn: its row opens at its first token, under the last result."""
        turn.reply_id, turn.reply_parent = event.reply_id, event.parent_id
        turn.new_user = False
        turn.rows_written = turn.stream_open = False
        turn.reasoning_started = turn.reasoning_s = None

    def on_failed(self, turn: Turn, message: str) -> None:
        if turn.stream_open:
            self.store.finish_stream(turn.reply_id, "error", provenance={"error": message, **self._provenance()})
            turn.stream_open = False

    def on_abandoned(self, turn: Turn) -> None:
        """The app closes with the turn unfinished (its TurnFinished never came)."""
        if turn.stream_open:
            self.store.finish_stream(turn.reply_id, "interrupted")
            turn.stream_open = False
