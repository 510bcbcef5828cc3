"""One remote turn's parts: the request a conversation becomes, the streamed chunks read back, the turn's stats.

Pure functions and a small reader, no I/O (``olmo3.remote.engine`` drives them). The request carries the active
path's messages as the person and the model wrote them: a user message's rendered content (attached documents
included), a reply's answer and, unless earlier reasoning is dropped, its reasoning as ``reasoning_content``. The
server renders them with the model's own template, where they are content, never markup.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ..chat.events import ContextOverflow
from ..chat.sampling import Sampling
from ..chat.transcript import FinishReason, Reconcile, TurnStats
from ..chat.tree import Node
from ..model.modelinfo import ModelInfo
from .client import RemoteError, one_line

__all__ = ["TurnReader", "finish_stats", "model_info_from_dict", "overflow_event", "request_body"]

_LIMIT = re.compile(r"(?:context length is|allows) (\d+) tokens")
_USED = re.compile(r"\((\d+) in the messages, (\d+) in the completion\)")


def request_body(
    model_id: str,
    system_prompt: str | None,
    path: list[Node],
    drop_turns: int,
    s: Sampling,
    seed: int,
    keep_reasoning: bool,
) -> dict[str, Any]:
    """``/v1/chat/completions``'s body for the conversation up to ``path[-1]`` (a user message, or a tool result)."""
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    turn = -1
    for n in path:
        turn += n.role == "user"
        if turn < drop_turns:
            continue
        if n.role == "user":
            messages.append({"role": "user", "content": n.raw})
        elif n.role == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": n.content}
            if keep_reasoning and n.reasoning:
                message["reasoning_content"] = n.reasoning
            messages.append(message)
        else:  # a tool's result (from a local turn with tools): an environment turn for the model
            messages.append({"role": "tool", "content": n.content, "tool_call_id": n.id})
    return {
        "model": model_id,
        "messages": messages,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
        "min_p": s.min_p,
        "repetition_penalty": s.repetition_penalty,
        "seed": seed,
        "max_completion_tokens": s.max_tokens,
        "stream_options": {"include_usage": True},
    }


class TurnReader:
    """Reads a streamed reply's chunks: the text by channel, how it finished, the server's token counts."""

    def __init__(self) -> None:
        self.answer: list[str] = []
        self.reasoning: list[str] = []
        self.finish: FinishReason | None = None
        self.prompt_tokens = self.cached_tokens = self.completion_tokens = 0
        self.t_first = self.t_last = 0.0

    @property
    def text_seen(self) -> bool:
        return bool(self.answer or self.reasoning)

    def feed(self, chunk: Mapping[str, Any], label: str) -> list[tuple[str, str]]:
        """The ``(channel, text)`` pieces of one chunk; RemoteError for an error chunk or one that is no chunk."""
        error = chunk.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, Mapping) else error
            code = error.get("code") if isinstance(error, Mapping) else None
            told = one_line(message or "") or "no reason given"
            raise RemoteError(
                f"The server at {label} stopped the reply: {told}", code=code if isinstance(code, str) else None
            )
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self._usage(usage)
        choices = chunk.get("choices")
        if choices is None and usage is not None:
            return []
        if not isinstance(choices, list):
            raise RemoteError(f"{label} streamed something that is not a chat completion chunk.")
        out: list[tuple[str, str]] = []
        for choice in choices[:1]:
            if not isinstance(choice, Mapping):
                raise RemoteError(f"{label} streamed something that is not a chat completion chunk.")
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                for key, channel, parts in (
                    ("reasoning_content", "reasoning", self.reasoning),
                    ("content", "answer", self.answer),
                ):
                    text = delta.get(key)
                    if isinstance(text, str) and text:
                        parts.append(text)
                        out.append((channel, text))
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                self.finish = "length" if finish == "length" else "stop"
        if out:
            now = time.perf_counter()
            self.t_first = self.t_first or now
            self.t_last = now
        return out

    def _usage(self, usage: Mapping[str, Any]) -> None:
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, Mapping) else 0
        self.prompt_tokens = _count(usage.get("prompt_tokens"))
        self.completion_tokens = _count(usage.get("completion_tokens"))
        self.cached_tokens = min(_count(cached), self.prompt_tokens)


def finish_stats(
    reader: TurnReader,
    t0: float,
    finish: FinishReason,
    how: Reconcile,
    context_used: int,
    context_limit: int,
    seed: int,
    dropped: int,
) -> TurnStats:
    """The turn's stats: the server's token counts, this side's clock (time to first token includes the network)."""
    now = time.perf_counter()
    ttft = reader.t_first - t0 if reader.t_first else 0.0
    n = reader.completion_tokens
    span = reader.t_last - reader.t_first
    return TurnStats(
        prompt_tokens=max(0, reader.prompt_tokens - reader.cached_tokens),
        cached_tokens=reader.cached_tokens,
        generated_tokens=n,
        ttft_s=ttft,
        tokens_per_s=(n - 1) / span if n > 1 and span > 0 else 0.0,
        prefill_s=ttft,
        total_s=now - t0,
        finish_reason=finish,
        peak_memory_bytes=0,  # the server's memory, not this computer's
        reconcile=how,
        context_used=context_used,
        context_limit=context_limit,
        seed=seed,
        dropped_turns=dropped,
        answer_tokens=n,
    )


def _count(value: Any) -> int:
    return value if _is_count(value) else 0


def model_info_from_dict(data: dict[str, Any], fallback_name: str) -> ModelInfo:
    """The server's ModelInfo, read leniently: a field of the wrong type gets a neutral value, text is one line."""
    neutral: dict[str, Any] = {"quantization": None, "revision": None, "repo_id": None}
    values: dict[str, Any] = {}
    for f in fields(ModelInfo):
        value = data.get(f.name)
        if f.name in ("path",):
            values[f.name] = ""  # where the server keeps its models is not a folder here
        elif f.name in ("name", "model_type", "fingerprint"):
            values[f.name] = one_line(value, 120) if isinstance(value, str) else ""
        elif f.name in ("revision", "repo_id"):
            values[f.name] = one_line(value, 200) if isinstance(value, str) and value else None
        elif f.name == "quantization":
            values[f.name] = dict(value) if isinstance(value, dict) else None
        elif f.name == "is_think":
            values[f.name] = value if isinstance(value, bool) else False
        elif f.name == "layer_types":
            values[f.name] = [str(v) for v in value] if isinstance(value, list) else []
        elif f.name == "eos_token_ids":
            values[f.name] = [v for v in value if _is_count(v)] if isinstance(value, list) else []
        else:  # the sizes and counts
            values[f.name] = value if _is_count(value) else neutral.get(f.name, 0)
    values["name"] = values["name"] or one_line(fallback_name, 120)
    return ModelInfo(**values)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def overflow_event(job_id: int, conv_id: str, e: RemoteError, droppable: int, max_tokens: int) -> ContextOverflow:
    """A 400 ``context_length_exceeded`` as the local engine reports it (the numbers read from its message)."""
    limit = _LIMIT.search(e.message)
    used = _USED.search(e.message)
    return ContextOverflow(
        job_id=job_id,
        conv_id=conv_id,
        used=int(used.group(1)) if used else 0,
        new_tokens=0,
        max_tokens=int(used.group(2)) if used else max_tokens,
        limit=int(limit.group(1)) if limit else 0,
        droppable_turns=max(droppable, 0),
        reason="memory" if "memory budget" in e.message else "context",
    )
