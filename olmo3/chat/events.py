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
