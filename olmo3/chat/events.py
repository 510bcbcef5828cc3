"""Events that chat sessions and the engine deliver (frozen dataclasses; no Qt, no MLX).

Sessions yield them with ``job_id=0``/``conv_id=""``; the engine stamps its job id and conversation id
(``dataclasses.replace``) before handing them to its callback, on the engine thread. Fields are keyword-only and
those without a default are required: a ``TurnFinished`` always carries its stats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .transcript import (
    BranchKind,
    CacheStateKind,
    OverflowReason,
    Provenance,
    TranscriptMessage,
    TranscriptState,
    TurnStats,
)

__all__ = [
    "BranchSwitched",
    "CacheState",
    "ContextOverflow",
    "ConversationClosed",
    "ConversationOpened",
    "Event",
    "JobCancelled",
    "JobFailed",
    "JobStarted",
    "MemoryReport",
    "ModelLoaded",
    "ModelUnloaded",
    "ModelWontFit",
    "PrefillProgress",
    "TextDelta",
    "ToolCallFinished",
    "ToolCallRequested",
    "ToolCallStarted",
    "ToolRoundFinished",
    "ToolRoundStarted",
    "TurnFinished",
    "TurnStats",
]


@dataclass(frozen=True, kw_only=True)
class Event:
    job_id: int = 0
    conv_id: str = ""


@dataclass(frozen=True, kw_only=True)
class JobStarted(Event):
    kind: str


@dataclass(frozen=True, kw_only=True)
class ModelLoaded(Event):
    info: Any  # olmo3.model.modelinfo.ModelInfo (typed loosely: events stay import-light)
    load_s: float
    context_tokens: int = 0  # the context every conversation gets with this model (0: the model's maximum)


@dataclass(frozen=True, kw_only=True)
class ModelWontFit(Event):
    """A load refused before reading any weights: weights + KV at ``context_tokens`` + runtime exceed the budget.

    The model that was loaded (if any) stays loaded. Load again with ``force=True`` to load anyway.
    """

    path: str
    context_tokens: int
    max_context: int
    weight_bytes: int
    kv_bytes: int
    needed_bytes: int
    budget_bytes: int
    message: str  # one line with the numbers and what to do


@dataclass(frozen=True, kw_only=True)
class ModelUnloaded(Event):
    pass


@dataclass(frozen=True, kw_only=True)
class MemoryReport(Event):
    """What the engine thread read about the device once: Metal's recommended working set (0 where there is none)."""

    working_set_bytes: int


@dataclass(frozen=True, kw_only=True)
class ConversationOpened(Event):
    messages: tuple[TranscriptMessage, ...]
    context_used: int
    context_limit: int
    cache_state: CacheStateKind


@dataclass(frozen=True, kw_only=True)
class PrefillProgress(Event):
    done: int
    total: int


@dataclass(frozen=True, kw_only=True)
class TextDelta(Event):
    text: str
    channel: str = "answer"  # "answer" | "reasoning"


@dataclass(frozen=True, kw_only=True)
class TurnFinished(Event):
    """The end of a turn. ``reply`` is None when it was cancelled before the first token (nothing was kept)."""

    stats: TurnStats
    reply: TranscriptMessage | None
    messages: tuple[TranscriptMessage, ...]  # the active path
    state: TranscriptState

    @property
    def provenance(self) -> Provenance | None:
        """What the reply was made with (None when nothing was kept)."""
        return self.reply.provenance if self.reply is not None else None


@dataclass(frozen=True, kw_only=True)
class ContextOverflow(Event):
    """Nothing was generated: the turn would not fit. Resend with ``overflow="drop_oldest"`` or give up."""

    used: int  # tokens of history + the new turn
    new_tokens: int
    max_tokens: int
    limit: int
    droppable_turns: int
    reason: OverflowReason = "context"  # "context" (max_position_embeddings) | "memory" (the KV budget)


@dataclass(frozen=True, kw_only=True)
class JobFailed(Event):
    message: str
    error: str


@dataclass(frozen=True, kw_only=True)
class JobCancelled(Event):
    pass


@dataclass(frozen=True, kw_only=True)
class BranchSwitched(Event):
    which: BranchKind
    messages: tuple[TranscriptMessage, ...]
    state: TranscriptState


@dataclass(frozen=True, kw_only=True)
class CacheState(Event):
    state: CacheStateKind  # "warm" (in memory) | "disk" (spilled) | "cold" (none)
    nbytes: int


@dataclass(frozen=True, kw_only=True)
class ConversationClosed(Event):
    pass


# --- tool turns (olmo3.chat.tool_turns) ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ToolRoundFinished(Event):
    """A reply that called tools (or tried to): record it like a reply; its calls run next, then the model goes on.

    ``reply.content`` is the text before the calls; ``calls`` are ``{"name", "arguments"}`` in order. When the
    model's ``<function_calls>`` block could not be read, ``calls`` is empty, ``parse_error`` says why, the reply
    keeps the block as text and the error goes back to the model as the call's result (a ``ToolCallFinished``).
    """

    reply: TranscriptMessage
    stats: TurnStats
    round: int
    calls: tuple[dict[str, Any], ...]
    state: TranscriptState
    parse_error: str | None = None


@dataclass(frozen=True, kw_only=True)
class ToolCallRequested(Event):
    """The model wants to call a tool that needs the person's consent. The call waits until someone answers with
    ``Engine.answer_tool_call(request_id, "allow" | "deny")`` (from any thread), or the job is cancelled."""

    request_id: int
    call_id: str  # the id its result (an environment message) will have
    round: int
    index: int  # the call's place in its reply (0-based)
    name: str
    server: str
    arguments: dict[str, Any]
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class ToolCallStarted(Event):
    """A call is running (its result comes in a ``ToolCallFinished`` with the same ``call_id``)."""

    call_id: str
    round: int
    index: int
    name: str
    server: str
    arguments: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ToolCallFinished(Event):
    """A call's outcome, now an ``environment`` message (``message``, id ``call_id``) under ``parent_id``.

    ``result`` is ``olmo3.tools.info.ToolResult.to_dict()`` (text, is_error, cancelled, timed_out, cut_chars);
    ``declined``: the person said no; ``name`` is empty for a call that could not be read."""

    call_id: str
    parent_id: str
    round: int
    index: int
    name: str
    server: str
    arguments: dict[str, Any]
    result: dict[str, Any]
    message: TranscriptMessage
    declined: bool = False
    elapsed_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ToolRoundStarted(Event):
    """The model reads the results and goes on: its next reply will be ``reply_id``, under ``parent_id``."""

    reply_id: str
    parent_id: str
    round: int
