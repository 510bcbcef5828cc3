"""Events that chat sessions and the engine deliver (plain frozen dataclasses; no Qt).

Sessions yield them with ``job_id=0``/``conv_id=""``; the engine stamps its job id and conversation id
(``dataclasses.replace``) before handing them to its callback, on the engine thread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TurnStats:
    """What one turn cost. ``prompt_tokens`` were fed this turn; ``cached_tokens`` were reused from a cache."""

    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    ttft_s: float
    tokens_per_s: float
    prefill_s: float
    total_s: float
    finish_reason: str  # "stop" | "length" | "cancelled"
    peak_memory_bytes: int
    # How the cache was brought in line with the template's rendering of the history:
    # "append" (pure follow-up), "append_turn_end" (a reply cut by max_tokens got its <|im_end|>),
    # "fresh" (first turn), "trim" (rewound a few tokens), "snapshot" (restored a turn-boundary snapshot),
    # "reprefill" (no usable cache: everything fed again), "restored" (the cache came back from disk).
    reconcile: str
    context_used: int
    context_limit: int
    seed: int | None = None
    dropped_turns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Event:
    job_id: int = 0
    conv_id: str = ""


@dataclass(frozen=True)
class JobStarted(Event):
    kind: str = ""


@dataclass(frozen=True)
class ModelLoaded(Event):
    info: Any = None  # olmo3.loader.ModelInfo
    load_s: float = 0.0


@dataclass(frozen=True)
class ModelUnloaded(Event):
    pass


@dataclass(frozen=True)
class ConversationOpened(Event):
    messages: list[dict[str, Any]] = field(default_factory=list)
    context_used: int = 0
    context_limit: int = 0
    cache_state: str = "cold"


@dataclass(frozen=True)
class PrefillProgress(Event):
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class TextDelta(Event):
    text: str = ""
    channel: str = "answer"  # "answer" | "reasoning"


@dataclass(frozen=True)
class TurnFinished(Event):
    stats: TurnStats | None = None
    reply: dict[str, Any] = field(default_factory=dict)  # role, content, reasoning, tokens, finish_reason, id
    messages: list[dict[str, Any]] = field(default_factory=list)  # the active path
    state: dict[str, Any] = field(default_factory=dict)  # ChatSession.to_state(), JSON-able


@dataclass(frozen=True)
class ContextOverflow(Event):
    """Nothing was generated: the turn would not fit. Resend with ``overflow="drop_oldest"`` or give up."""

    used: int = 0  # tokens of history + the new turn
    new_tokens: int = 0
    max_tokens: int = 0
    limit: int = 0
    droppable_turns: int = 0
    reason: str = "context"  # "context" (max_position_embeddings) | "memory" (the KV budget)


@dataclass(frozen=True)
class JobFailed(Event):
    message: str = ""
    error: str = ""


@dataclass(frozen=True)
class JobCancelled(Event):
    pass


@dataclass(frozen=True)
class BranchSwitched(Event):
    messages: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CacheState(Event):
    state: str = "cold"  # "warm" (in memory) | "disk" (spilled) | "cold" (none)
    nbytes: int = 0


@dataclass(frozen=True)
class ConversationClosed(Event):
    pass
