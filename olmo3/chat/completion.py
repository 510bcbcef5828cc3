"""Stateless completion requests: what the local server (``olmo3.serve``) asks of the engine. MLX-free, Qt-free.

A :class:`CompletionRequest` carries a whole conversation (or a raw prompt), never a conversation id. The engine
(``Engine.complete``) renders it with the model's chat template, finds the cached conversation sharing the longest
prefix (``olmo3.chat.prefix_index``) and runs the turn there. Its events go to the request's own listener:
``JobStarted``, ``PrefillProgress``, ``TextDelta`` (already cut at a stop string), then exactly one of
:class:`CompletionFinished`, :class:`CompletionRejected`, ``ContextOverflow`` or ``JobFailed``/``JobCancelled``.

Conversations the server keeps live under ids starting with :data:`SERVE_PREFIX` (``"serve/"``): a ``/`` never
appears in the app's conversation ids, so the two never meet, and the engine keeps their events away from the
app's listener.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .events import Event
from .transcript import Reconcile, TurnStats

__all__ = [
    "SERVE_PREFIX",
    "ChatMessage",
    "CompletionFinished",
    "CompletionRejected",
    "CompletionRequest",
    "StopMatcher",
    "is_serve_id",
]

SERVE_PREFIX = "serve/"
MessageRole = Literal["system", "user", "assistant", "environment"]  # environment: a tool's result
CompletionFinish = Literal["stop", "length", "cancelled"]
# Where the reused prefix came from: the matched conversation's live cache, one of its snapshots, its file on
# disk, a copy of another conversation's cache (a new conversation forked from a shared prefix), or nowhere.
CacheSource = Literal["live", "snapshot", "disk", "fork", "none"]


def is_serve_id(conv_id: str) -> bool:
    return conv_id.startswith(SERVE_PREFIX)


@dataclass(frozen=True)
class ChatMessage:
    """One message of a request. ``reasoning``: an assistant's reasoning, when the client sent it back.

    Tools: an assistant message that called tools has ``calls``, the calls as Olmo writes them between its
    ``<function_calls>`` tags (one ``name(key=<json>, …)`` per line), and the client's ``call_ids``; an
    ``environment`` message is a tool's result (OpenAI's ``tool`` message), ``tool_call_id`` the call it answers.
    """

    role: MessageRole
    content: str
    reasoning: str | None = None
    calls: str | None = None
    call_ids: tuple[str, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class CompletionRequest:
    """A whole conversation ending with a user (or system) message, or a raw ``prompt`` rendered as is.

    ``sampling``: overrides of :class:`olmo3.chat.sampling.Sampling` (``max_tokens`` included; without it the reply
    may run to the model's default or to the end of the context, whichever comes first). ``stop``: strings that end
    the reply (not included in it). ``logit_bias``: token id → bias added to its logit (-100 bans it). ``tools``:
    the functions offered to the model (template definitions, ``olmo3.tools.messages``), rendered by its template.
    """

    messages: tuple[ChatMessage, ...] = ()
    prompt: str | None = None
    sampling: Mapping[str, Any] = field(default_factory=dict)
    stop: tuple[str, ...] = ()
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    tools: tuple[Mapping[str, Any], ...] | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (not self.messages):
            raise ValueError("a completion request has either messages or a prompt")

    @property
    def raw(self) -> bool:
        return self.prompt is not None

    def conversation_key(self) -> str | None:
        """What makes two requests one conversation: the same messages up to and including the first user message.

        Requests with the same key continue, edit or regenerate one conversation and share its cache (its live
        cache and turn snapshots); a request with a new key starts a conversation of its own. Raw prompts have
        no turns, hence no key."""
        if self.raw:
            return None
        head: list[Any] = [list(self.tools)] if self.tools else []  # the tools are part of the system turn
        for m in self.messages:
            head.append([m.role, m.content])
            if m.role == "user":
                break
        return hashlib.sha256(json.dumps(head, ensure_ascii=False).encode()).hexdigest()[:24]


@dataclass(frozen=True, kw_only=True)
class CompletionFinished(Event):
    """The end of a request's turn. ``prompt_tokens`` = ``cached_tokens`` (reused) + tokens fed this turn."""

    finish_reason: CompletionFinish
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reconcile: Reconcile
    source: CacheSource
    stats: TurnStats


@dataclass(frozen=True, kw_only=True)
class CompletionRejected(Event):
    """The engine refused the request before running it (bad input: 400; no model loaded: 503)."""

    status: int
    message: str
    code: str | None = None
    param: str | None = None


class StopMatcher:
    """Cuts streamed text at the first stop string; holds back a tail that could be the start of one.

    ``feed(text)`` returns what may be shown now; once a stop string is found, ``hit`` is True, the text before
    it is returned and everything after is dropped. ``flush()`` returns the held-back tail at the end.
    """

    def __init__(self, stops: tuple[str, ...] | list[str]):
        self.stops = [s for s in stops if s]
        self.hit = False
        self._held = ""

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        if not self.stops:
            return text
        buf = self._held + text
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            self._held = ""
            return buf[:cut]
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), keep, -1):
                if buf.endswith(s[:k]):
                    keep = k
                    break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep] if keep else buf

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.hit else held
