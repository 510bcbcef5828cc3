"""One remote turn's parts: the request a conversation becomes, the streamed chunks read back, the turn's stats.

Pure functions and a small reader, no I/O (``olmo3.remote.engine`` drives them). The request carries the active
path's messages as the person and the model wrote them: a user message's rendered content (attached documents
included), a reply's answer and, unless earlier reasoning is dropped, its reasoning as ``reasoning_content``; a
reply that called tools carries its calls as OpenAI ``tool_calls`` and each result follows as a ``tool`` message
whose ``tool_call_id`` is its environment node's id (the call's id: the server matches them, and renders the calls
back as Olmo's ``<function_calls>``, so its prefix cache still finds the turn). The server renders everything with
the model's own template, where it is content, never markup.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from itertools import takewhile
from typing import Any

from ..chat.events import ContextOverflow
from ..chat.sampling import Sampling
from ..chat.transcript import (
    THINK_CLOSE,
    THINK_OPEN,
    FinishReason,
    Provenance,
    Reconcile,
    TranscriptMessage,
    TranscriptState,
    TurnStats,
)
from ..chat.tree import ConversationTree, Node
from ..model.modelinfo import ModelInfo
from ..tools.calls import FunctionCall, calls_to_openai
from .client import RemoteError, ServerInfo, one_line

__all__ = [
    "RemoteConversation",
    "TurnOptions",
    "TurnReader",
    "finish_stats",
    "model_info_from_dict",
    "node_calls",
    "overflow_event",
    "provenance",
    "request_body",
]

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
    tools: list[dict[str, Any]] | None = None,
    thinking_budget: int | None = None,
) -> dict[str, Any]:
    """``/v1/chat/completions``'s body for the conversation up to ``path[-1]`` (a user message, or a tool result);
    ``tools``: the offered tools' definitions (OpenAI's function shape already), None for none."""
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    turn = -1
    for i, n in enumerate(path):
        turn += n.role == "user"
        if turn < drop_turns:
            continue
        if n.role == "user":
            messages.append({"role": "user", "content": n.raw})
        elif n.role == "assistant":
            message: dict[str, Any] = {"role": "assistant", "content": n.content}
            if keep_reasoning and n.reasoning:
                message["reasoning_content"] = n.reasoning
            calls = node_calls(n)
            if calls:
                message["tool_calls"] = calls_to_openai(calls, _result_ids(path, i, len(calls)))
            messages.append(message)
        else:  # a tool's result: an environment turn for the model, answering the call with its id
            messages.append({"role": "tool", "content": n.content, "tool_call_id": n.id})
    body: dict[str, Any] = {
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
    if tools:
        body["tools"] = tools
    if thinking_budget is not None:  # olmo3 serve's extension (only sent to a server that lists it)
        body["thinking_budget"] = thinking_budget
    return body


def node_calls(n: Node) -> tuple[FunctionCall, ...]:
    """The calls a reply made (``tool["calls"]``, as the local engine and the remote one record them), or none."""
    if n.calls is None or not isinstance(n.tool, Mapping):
        return ()
    out = []
    for call in n.tool.get("calls") or ():
        if isinstance(call, Mapping) and isinstance(call.get("name"), str):
            arguments = call.get("arguments")
            out.append(FunctionCall(call["name"], dict(arguments) if isinstance(arguments, Mapping) else {}))
    return tuple(out)


def _result_ids(path: list[Node], i: int, count: int) -> list[str]:
    """The ids of the calls of ``path[i]``: its results' node ids, in call order (every call gets a result; should
    one be missing, a made-up id stands in, so the server still reads the calls)."""
    ids = [m.id for m in takewhile(lambda m: m.role == "environment", path[i + 1 :])][:count]
    return ids + [f"{path[i].id}-call-{k}" for k in range(len(ids), count)]


class TurnReader:
    """Reads a streamed reply's chunks: the text by channel, how it finished, the server's token counts, and the
    ``tool_calls`` it made (``called``: it finished with ``finish_reason: "tool_calls"``; the calls' pieces are
    joined by their ``index``, as OpenAI streams them)."""

    def __init__(self) -> None:
        self.answer: list[str] = []
        self.reasoning: list[str] = []
        self.finish: FinishReason | None = None
        self.called = False
        self.dropped = 0  # the oldest turns left out of this request (the overflow policy)
        self._calls: dict[int, dict[str, Any]] = {}
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
                self._tool_calls(delta.get("tool_calls"), label)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                self.finish = "length" if finish == "length" else "stop"
                self.called = finish == "tool_calls"
        if out:
            now = time.perf_counter()
            self.t_first = self.t_first or now
            self.t_last = now
        return out

    def reply(self, node_id: str, parent: str, stats: TurnStats, prov: Provenance) -> Node:
        """The reply read, as a node (a Think reply's reasoning in ``<think>…</think>`` before its answer)."""
        reasoning = "".join(self.reasoning) if self.reasoning else None
        content = "".join(self.answer)
        return Node(
            id=node_id,
            role="assistant",
            content=content,
            raw=f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{content}" if reasoning is not None else content,
            parent=parent,
            reasoning=reasoning,
            finish_reason=stats.finish_reason,
            think=reasoning is not None,
            stats=stats,
            provenance=prov,
        )

    def _tool_calls(self, pieces: Any, label: str) -> None:
        if pieces is None:
            return
        if not isinstance(pieces, list) or not all(isinstance(p, Mapping) for p in pieces):
            raise RemoteError(f"{label} streamed tool calls that are not OpenAI's tool_calls.")
        for k, piece in enumerate(pieces):
            index = piece.get("index", k)
            function = piece.get("function")
            if not _is_count(index) or (function is not None and not isinstance(function, Mapping)):
                raise RemoteError(f"{label} streamed tool calls that are not OpenAI's tool_calls.")
            call = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
            fields_in = [("id", piece.get("id"))]
            if function is not None:
                fields_in += [("name", function.get("name")), ("arguments", function.get("arguments"))]
            for key, value in fields_in:
                if isinstance(value, str):
                    call[key] += value
                elif isinstance(value, Mapping) and key == "arguments":  # an object, not a JSON string
                    call[key] += json.dumps(value)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The calls made, in OpenAI's shape (``calls_from_openai`` reads them), in index order."""
        return [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for _, c in sorted(self._calls.items())
        ]

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


class RemoteConversation(ConversationTree):
    """A conversation as the remote engine keeps it: the tree (tools' results too), its system prompt and sampling."""

    def __init__(self, system_prompt: str | None, sampling: Sampling) -> None:
        super().__init__()
        self.system_prompt = system_prompt or None
        self.sampling = sampling
        self.context_used = 0  # the last turn's prompt + reply, as the server counted them

    def load(self, state: TranscriptState) -> None:
        self.system_prompt = state.system_prompt
        self.drop_turns = state.drop_turns
        self.nodes = {n.id: Node.thaw(n) for n in state.nodes}
        self.root_children = list(state.root_children)
        self.root_active = state.root_active

    def discard(self, user: Node, new_user: bool, previous_active: str | None) -> None:
        """Take a new user message back out of the tree (its turn failed or was cancelled before any text)."""
        if new_user and user.id in self.nodes and not self.nodes[user.id].children:
            self._remove(user)
            if previous_active is not None and previous_active in self.nodes:
                self._set_active(self.nodes[previous_active])

    def state(self, fingerprint: str) -> TranscriptState:
        """The tree as the store keeps it; no token ids (the server's), so a local model re-reads the history."""
        return TranscriptState(
            system_prompt=self.system_prompt,
            drop_turns=self.drop_turns,
            root_children=tuple(self.root_children),
            root_active=self.root_active,
            nodes=tuple(n.freeze() for n in self.nodes.values()),
            tokens=(),
            model_fingerprint=fingerprint,
            template_hash="",
        )

    def add_environment(
        self, parent_id: str, text: str, *, tool: dict[str, Any], node_id: str | None = None
    ) -> TranscriptMessage:
        """Add a tool's result (an ``environment`` turn, plain text) after ``parent_id``, as the session does."""
        if parent_id not in self.nodes:
            raise KeyError(f"no message {parent_id} in this conversation")
        node = self._add(
            Node(id=self.fresh_id(node_id), role="environment", content=text, raw=text, parent=parent_id, tool=tool)
        )
        return self._message(node, self._turn_index(node))


@dataclass
class TurnOptions:
    """What every request of one turn shares: the sampling, the seed, whether reasoning is kept, the tools."""

    s: Sampling
    seed: int
    keep: bool
    tools: list[dict[str, Any]] | None = None
    thinking_budget: int | None = None  # sent when the server takes it


def provenance(info: ModelInfo, server: ServerInfo, context: int, opts: TurnOptions, how: Reconcile) -> Provenance:
    """A remote reply's provenance: the server's model, this turn's settings (the thinking budget if it was sent)."""
    s, seed, keep = opts.s, opts.seed, opts.keep
    return Provenance(
        sampling=replace(s, seed=seed, keep_reasoning=keep, thinking_budget=opts.thinking_budget),
        seed=seed,
        seed_was_random=s.seed is None,
        model_name=info.name,
        model_repo_id=info.repo_id,
        model_revision=info.revision,
        model_fingerprint=info.fingerprint,
        quantization=dict(info.quantization) if info.quantization else None,
        template_hash="",
        thinking_budget=opts.thinking_budget,
        keep_reasoning=keep,
        kv_bits=None,
        context_limit=context,
        engine_version=f"olmo3 serve {server.version} at {server.address.label}".replace("  ", " "),
        reconcile=how,
    )
