"""OpenAI's request and response shapes: parse a body into a :class:`CompletionRequest`, build chunks and replies.

Pure functions, no I/O. Every refusal is an :class:`ApiError` (400) naming the parameter. Parameters we do not
implement are refused when they would change the answer (``n`` > 1, ``logprobs``, penalties, JSON modes) and
ignored when they would not (``user``, ``metadata``, ``store``, ...).

Tools: ``tools`` (function tools) are offered to the model through its own chat template; an assistant message's
``tool_calls`` become Olmo's ``<function_calls>`` (``name(key=<json>, …)``, one per line) and ``tool`` messages its
``environment`` turns, in the order of the calls they answer (``olmo3.tools.messages`` maps both ways). A reply
that calls tools comes back as ``tool_calls`` with ``finish_reason`` "tool_calls" (:func:`reply_message`).
``tool_choice`` may be "auto" or "none"; forcing a call ("required", a named function) and the legacy
``functions`` are refused with :data:`TOOLS_NOT_SUPPORTED`.

Olmo's extension: a chat request may carry ``thinking_budget`` (an integer, 1 to :data:`MAX_THINKING_BUDGET`, or
null): a Think model's reasoning is closed after that many tokens, as the app's own setting does (other models
ignore it). ``/v1/olmo/info`` lists it under ``capabilities``; OpenAI's client sends it with ``extra_body``.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..chat.completion import ChatMessage, CompletionRequest, MessageRole
from ..tools.calls import calls_from_openai, render_calls
from ..tools.messages import completion_to_openai, openai_tools_to_definitions
from .errors import ApiError

__all__ = [
    "TOOLS_NOT_SUPPORTED",
    "ParsedRequest",
    "chat_chunk",
    "chat_response",
    "parse_chat",
    "parse_completion",
    "text_chunk",
    "text_response",
    "usage",
]

MAX_THINKING_BUDGET = 1 << 20
TOOLS_NOT_SUPPORTED = "only tool_choice 'auto' and 'none' are supported, with function tools (not 'functions')"
MAX_STOPS = 4
LEGACY_DEFAULT_MAX_TOKENS = 16  # /v1/completions' documented default
Kind = Literal["chat", "text"]


@dataclass(frozen=True)
class ParsedRequest:
    kind: Kind
    model: str
    completion: CompletionRequest
    stream: bool
    include_usage: bool
    id: str
    created: int


def _bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _number(body: Mapping[str, Any], key: str, lo: float, hi: float, *, lo_open: bool = False) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(f"'{key}' must be a number", key)
    if value < lo or value > hi or (lo_open and value == lo):
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise _bad(f"'{key}' must be in {bound}, not {value}", key)
    return float(value)


def _integer(body: Mapping[str, Any], key: str, lo: int, hi: int = 2**31 - 1) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"'{key}' must be an integer", key)
    if not lo <= value <= hi:
        raise _bad(f"'{key}' must be between {lo} and {hi}, not {value}", key)
    return value


def _common(body: Any, kind: Kind) -> tuple[str, dict[str, Any], tuple[str, ...], dict[int, float], bool, bool]:
    """The parameters both endpoints share: model, sampling, stop, logit_bias, stream."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("you must provide a model parameter", "model")
    sampling: dict[str, Any] = {}
    for key, lo, hi, lo_open in (("temperature", 0.0, 2.0, False), ("top_p", 0.0, 1.0, True)):
        value = _number(body, key, lo, hi, lo_open=lo_open)
        if value is not None:
            sampling[key] = value
    min_p = _number(body, "min_p", 0.0, 1.0)
    if min_p is not None:
        if min_p >= 1.0:
            raise _bad("'min_p' must be below 1", "min_p")
        sampling["min_p"] = min_p
    top_k = _integer(body, "top_k", 0, 1 << 20)
    if top_k is not None:
        sampling["top_k"] = top_k
    repetition = _number(body, "repetition_penalty", 0.0, 10.0, lo_open=True)
    if repetition is not None:
        sampling["repetition_penalty"] = repetition
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _bad("'seed' must be an integer", "seed")
        sampling["seed"] = seed % (2**31)
    keys = ("max_completion_tokens", "max_tokens") if kind == "chat" else ("max_tokens",)
    for key in keys:
        value = _integer(body, key, 1)
        if value is not None:
            sampling["max_tokens"] = value
            break
    if kind == "text" and "max_tokens" not in sampling:
        sampling["max_tokens"] = LEGACY_DEFAULT_MAX_TOKENS
    n = body.get("n")
    if n is not None and n != 1:
        raise _bad("only n=1 is supported", "n")
    for key in ("presence_penalty", "frequency_penalty"):
        value = _number(body, key, -2.0, 2.0)
        if value:
            raise _bad(f"'{key}' is not supported (use repetition_penalty)", key)
    if body.get("logprobs") or body.get("top_logprobs") is not None:
        raise _bad("logprobs are not supported", "logprobs")

    stop = body.get("stop")
    stops: tuple[str, ...] = ()
    if isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    elif stop is not None:
        raise _bad("'stop' must be a string or a list of strings", "stop")
    if len(stops) > MAX_STOPS:
        raise _bad(f"'stop' takes at most {MAX_STOPS} strings", "stop")

    bias_in = body.get("logit_bias")
    bias: dict[int, float] = {}
    if bias_in is not None:
        if not isinstance(bias_in, dict):
            raise _bad("'logit_bias' must map token ids to numbers", "logit_bias")
        for k, v in bias_in.items():
            try:
                token = int(k)
            except ValueError:
                raise _bad(f"logit_bias: {k!r} is not a token id", "logit_bias") from None
            if isinstance(v, bool) or not isinstance(v, int | float) or not -100 <= v <= 100:
                raise _bad(f"logit_bias: the bias of {k} must be a number in [-100, 100]", "logit_bias")
            bias[token] = float(v)

    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("'stream' must be true or false", "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise _bad("'stream_options' must be an object", "stream_options")
        if not stream:
            raise _bad("'stream_options' is only allowed when 'stream' is true", "stream_options")
        include_usage = bool(options.get("include_usage"))
    return model, sampling, stops, bias, bool(stream), include_usage


def _content(value: Any, index: int) -> str:
    """A message's content: a string, or a list of text parts (other parts are refused)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise _bad(f"messages[{index}]: only text content is supported, not {kind!r}", f"messages[{index}]")
            texts.append(part["text"])
        return "".join(texts)
    raise _bad(f"messages[{index}].content must be a string or a list of text parts", f"messages[{index}].content")


def _message(m: Any, index: int) -> ChatMessage:
    if not isinstance(m, dict):
        raise _bad(f"messages[{index}] must be an object", f"messages[{index}]")
    role = m.get("role")
    if role == "function" or m.get("function_call"):
        raise _bad(TOOLS_NOT_SUPPORTED, f"messages[{index}]", "tools_not_supported")
    if role == "developer":
        role = "system"
    if role == "tool":
        call_id = m.get("tool_call_id")
        return ChatMessage(
            "environment", _content(m.get("content"), index), tool_call_id=call_id if isinstance(call_id, str) else None
        )
    if role not in ("system", "user", "assistant"):
        raise _bad(
            f"messages[{index}].role must be system, user, assistant or tool, not {role!r}", f"messages[{index}].role"
        )
    reasoning = None
    calls: str | None = None
    ids: tuple[str, ...] = ()
    if role == "assistant":
        r = m.get("reasoning_content", m.get("reasoning"))
        reasoning = r if isinstance(r, str) else None
        tool_calls = m.get("tool_calls")
        if tool_calls:
            if not isinstance(tool_calls, list):
                raise _bad(f"messages[{index}].tool_calls must be a list", f"messages[{index}].tool_calls")
            try:
                parsed = calls_from_openai(tool_calls)
            except ValueError as e:
                raise _bad(f"messages[{index}].{e}", f"messages[{index}].tool_calls") from None
            calls = render_calls(parsed)
            ids = tuple(str(c.get("id") or "") for c in tool_calls)
    msg_role: MessageRole = role
    return ChatMessage(msg_role, _content(m.get("content"), index), reasoning, calls, ids)


def _in_call_order(messages: tuple[ChatMessage, ...]) -> tuple[ChatMessage, ...]:
    """Tool results in the order of the calls they answer (the model reads one environment turn per call, in call
    order); results whose ids say nothing keep the order they came in."""
    out: list[ChatMessage] = []
    ids: tuple[str, ...] = ()
    run: list[ChatMessage] = []

    def flush() -> None:
        if run and all(m.tool_call_id in ids for m in run):
            run.sort(key=lambda m: ids.index(m.tool_call_id or ""))
        out.extend(run)
        run.clear()

    for m in messages:
        if m.role == "environment":
            run.append(m)
            continue
        flush()
        if m.role == "assistant":
            ids = m.call_ids
        out.append(m)
    flush()
    return tuple(out)


def _tools(body: Mapping[str, Any]) -> tuple[dict[str, Any], ...] | None:
    """The offered tools as template definitions (None: none), after ``tool_choice``."""
    if body.get("functions") or body.get("function_call"):
        raise _bad(TOOLS_NOT_SUPPORTED, "functions", "tools_not_supported")
    choice = body.get("tool_choice")
    if choice not in (None, "none", "auto"):
        raise _bad(TOOLS_NOT_SUPPORTED, "tool_choice", "tools_not_supported")
    raw = body.get("tools")
    if raw is not None and not isinstance(raw, list):
        raise _bad("'tools' must be a list of function tools", "tools")
    try:
        definitions = openai_tools_to_definitions(raw)
    except (ValueError, AttributeError) as e:
        raise _bad(str(e), "tools") from None
    if definitions is None or choice == "none":
        return None
    return tuple(definitions)


def parse_chat(body: Any) -> ParsedRequest:
    """``POST /v1/chat/completions``."""
    model, sampling, stops, bias, stream, include_usage = _common(body, "chat")
    budget = _integer(body, "thinking_budget", 1, MAX_THINKING_BUDGET)
    if budget is not None:  # Olmo's extension: a Think model's reasoning stops after this many tokens
        sampling["thinking_budget"] = budget
    tools = _tools(body)
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise _bad("only response_format {'type': 'text'} is supported", "response_format")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("'messages' must be a non-empty list", "messages")
    messages = _in_call_order(tuple(_message(m, i) for i, m in enumerate(raw)))
    if messages[-1].role == "assistant":
        raise _bad("the last message must be from the user, the system or a tool", "messages")
    request = CompletionRequest(messages=messages, sampling=sampling, stop=stops, logit_bias=bias, tools=tools)
    return ParsedRequest(
        "chat", model, request, stream, include_usage, f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    )


def parse_completion(body: Any) -> ParsedRequest:
    """``POST /v1/completions``: a raw prompt, fed as text without the chat template."""
    model, sampling, stops, bias, stream, include_usage = _common(body, "text")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad("'prompt' must be a string (one prompt per request; token-id prompts are not supported)", "prompt")
    if not prompt:
        raise _bad("'prompt' is empty", "prompt")
    if body.get("echo"):
        raise _bad("'echo' is not supported", "echo")
    if body.get("suffix"):
        raise _bad("'suffix' is not supported", "suffix")
    if body.get("best_of") not in (None, 1):
        raise _bad("only best_of=1 is supported", "best_of")
    request = CompletionRequest(prompt=prompt, sampling=sampling, stop=stops, logit_bias=bias)
    return ParsedRequest("text", model, request, stream, include_usage, f"cmpl-{uuid.uuid4().hex}", int(time.time()))


# ---------------------------------------------------------------------- responses
def usage(prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def _envelope(p: ParsedRequest, model: str, obj: str) -> dict[str, Any]:
    return {"id": p.id, "object": obj, "created": p.created, "model": model}


def chat_chunk(p: ParsedRequest, model: str, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    chunk = _envelope(p, model, "chat.completion.chunk")
    chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    if p.include_usage:
        chunk["usage"] = None
    return chunk


def text_chunk(p: ParsedRequest, model: str, text: str, finish_reason: str | None = None) -> dict[str, Any]:
    chunk = _envelope(p, model, "text_completion")
    chunk["choices"] = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]
    if p.include_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(p: ParsedRequest, model: str, used: dict[str, Any]) -> dict[str, Any]:
    chunk = _envelope(p, model, "chat.completion.chunk" if p.kind == "chat" else "text_completion")
    chunk["choices"] = []
    chunk["usage"] = used
    return chunk


def reply_message(p: ParsedRequest, content: str, finish_reason: str) -> tuple[dict[str, Any], str]:
    """The assistant message of a chat reply and its ``finish_reason``: with tools offered, a reply that ended with
    Olmo's ``<function_calls>`` block is ``tool_calls`` (``finish_reason`` "tool_calls")."""
    return completion_to_openai(content, finish_reason, tools_offered=bool(p.completion.tools))


def chat_response(
    p: ParsedRequest, model: str, content: str, reasoning: str | None, finish_reason: str, used: dict[str, Any]
) -> dict[str, Any]:
    message, finish_reason = reply_message(p, content, finish_reason)
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    response = _envelope(p, model, "chat.completion")
    response["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}]
    response["usage"] = used
    return response


def text_response(p: ParsedRequest, model: str, text: str, finish_reason: str, used: dict[str, Any]) -> dict[str, Any]:
    response = _envelope(p, model, "text_completion")
    response["choices"] = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}]
    response["usage"] = used
    return response
