"""The chat-template messages of a conversation with tools, and their OpenAI chat-format equivalents.

Rendering goes through the model's own template: ``tokenizer.apply_chat_template(messages, **render_kwargs(tools),
tokenize=False, add_generation_prompt=True)``. With the Olmo-3.1 Instruct template that gives::

    <|im_start|>system\\n{prompt or the default}<functions>[{tool JSON}, …]</functions><|im_end|>\\n
    <|im_start|>user\\n{text}<|im_end|>\\n
    <|im_start|>assistant\\n{text}<function_calls>{calls}</function_calls><|im_end|>\\n
    <|im_start|>environment\\n{result}<|im_end|>\\n          (one turn per call, in call order)
    <|im_start|>assistant\\n

The shapes here exist for three quirks of that template:

* ``tools`` must be ``None``, not ``[]``, when there are none: with a system prompt, ``[]`` renders an empty
  ``<functions>[]</functions>``; ``render_kwargs`` does that.
* With a system prompt, the template puts ``<functions>`` straight after it, while Ai2's training template (the
  open-instruct ``olmo`` template, whose ``functions`` field wrote ``' <functions>'``) had a space there. The space
  is added to the prompt's *content* by ``system_message``, so the markup still comes only from the template.
* An assistant turn with calls can be given two ways: ``function_calls`` (a string, written verbatim between the
  tags) replays exactly what the model wrote, which keeps the rendered history token-identical to the cached
  generation; ``tool_calls`` (OpenAI-like, arguments as a mapping) is rendered by the template as
  ``name(key=<json>, …)``, which is what ``FunctionCall.render`` writes.

Tool definitions are OpenAI's function shape, ``{"type": "function", "function": {name, description,
parameters}}``, which is what transformers passes to templates (and what Ollama's Olmo-3 renderer writes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .calls import FunctionCall, ParsedReply, calls_from_openai, calls_to_openai
from .info import ToolInfo, ToolResult

ENVIRONMENT = "environment"


def tool_definition(tool: ToolInfo) -> dict[str, Any]:
    """One tool as the template lists it inside ``<functions>``."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.input_schema},
    }


def tool_definitions(tools: Iterable[ToolInfo]) -> list[dict[str, Any]] | None:
    """The enabled tools' definitions, or ``None`` when there are none (see the module docstring)."""
    defs = [tool_definition(t) for t in tools if t.enabled]
    return defs or None


def render_kwargs(tools: Iterable[ToolInfo] | Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """Keyword arguments for ``apply_chat_template``: ``tools`` as definitions, ``None`` when empty."""
    if tools is None:
        return {"tools": None}
    items = list(tools)
    if all(isinstance(t, ToolInfo) for t in items):
        return {"tools": tool_definitions(t for t in items if isinstance(t, ToolInfo))}
    return {"tools": [dict(t) for t in items if isinstance(t, Mapping)] or None}


def system_message(content: str, *, with_tools: bool) -> dict[str, Any]:
    """The person's system prompt; with tools, followed by the space the training data had before ``<functions>``."""
    if with_tools and content and not content[-1].isspace():
        content += " "
    return {"role": "system", "content": content}


def user_message(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant_message(
    content: str, calls: Sequence[FunctionCall] = (), *, raw_calls: str | None = None
) -> dict[str, Any]:
    """An assistant turn: its text, then its calls, verbatim (``raw_calls``) or rendered from ``calls``."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if raw_calls is not None:
        message["function_calls"] = raw_calls
    elif calls:
        message["tool_calls"] = [
            {"type": "function", "function": {"name": c.name, "arguments": dict(c.arguments)}} for c in calls
        ]
    return message


def reply_message(reply: ParsedReply) -> dict[str, Any]:
    """The assistant turn for a parsed model reply, replaying its calls exactly as written."""
    return assistant_message(reply.content, raw_calls=reply.raw_calls)


def environment_message(result: ToolResult | str) -> dict[str, Any]:
    """One call's result, as the ``environment`` turn the model reads (plain text, no wrapper)."""
    return {"role": ENVIRONMENT, "content": result.text if isinstance(result, ToolResult) else result}


# --- The OpenAI chat format -------------------------------------------------------------------------------------


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"{where}: only text content is supported")
            parts.append(part["text"])
        return "\n".join(parts)
    raise ValueError(f"{where}: content must be a string or a list of text parts")


def openai_tools_to_definitions(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """OpenAI ``tools`` as template definitions (same shape; checked, unknown keys dropped); ``None`` if empty."""
    out = []
    for i, tool in enumerate(tools or ()):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if tool.get("type", "function") != "function" or not isinstance(function, Mapping):
            raise ValueError(f"tools[{i}]: only function tools are supported")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"tools[{i}]: the function has no name")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, Mapping):
            raise ValueError(f"tools[{i}] ({name}): parameters must be a JSON schema object")
        description = function.get("description", "")
        out.append(
            {
                "type": "function",
                "function": {"name": name, "description": description or "", "parameters": dict(parameters)},
            }
        )
    return out or None


def openai_messages_to_template(
    messages: Sequence[Mapping[str, Any]], *, with_tools: bool = False
) -> list[dict[str, Any]]:
    """OpenAI chat messages as template messages: ``tool`` → ``environment`` (in the order of the assistant's
    calls when the ids say so), ``developer`` → ``system``, assistant ``tool_calls`` → Olmo calls."""
    out: list[dict[str, Any]] = []
    pending_ids: list[str] = []
    tool_run: list[tuple[int, dict[str, Any]]] = []

    def flush_tools() -> None:
        if all(i >= 0 for i, _ in tool_run):
            tool_run.sort(key=lambda item: item[0])
        out.extend(m for _, m in tool_run)
        tool_run.clear()

    for n, message in enumerate(messages):
        where = f"messages[{n}]"
        role = message.get("role")
        if role != "tool":
            flush_tools()
        if role in ("system", "developer"):
            out.append(system_message(_text(message.get("content"), where), with_tools=with_tools))
        elif role == "user":
            out.append(user_message(_text(message.get("content"), where)))
        elif role == "assistant":
            tool_calls = message.get("tool_calls") or []
            calls = calls_from_openai(tool_calls)
            pending_ids = [str(c.get("id", "")) for c in tool_calls]
            out.append(assistant_message(_text(message.get("content"), where), calls))
        elif role == "tool":
            call_id = str(message.get("tool_call_id", ""))
            index = pending_ids.index(call_id) if call_id and call_id in pending_ids else -1
            tool_run.append((index, environment_message(_text(message.get("content"), where))))
        else:
            raise ValueError(f"{where}: unknown role {role!r}")
    flush_tools()
    return out


def reply_to_openai(reply: ParsedReply, ids: Sequence[str] | None = None) -> dict[str, Any]:
    """A parsed model reply as an OpenAI assistant message (``content`` None when there is only a call)."""
    message: dict[str, Any] = {"role": "assistant", "content": (reply.content + reply.trailing) or None}
    if reply.calls:
        message["tool_calls"] = calls_to_openai(reply.calls, ids)
    return message


def completion_to_openai(
    text: str, finish_reason: str, *, tools_offered: bool, ids: Sequence[str] | None = None
) -> tuple[dict[str, Any], str]:
    """A generated reply as an OpenAI assistant message and its ``finish_reason`` (the server's side of a turn).

    With tools offered, a reply that ended on its stop token and holds a ``<function_calls>`` block becomes
    ``tool_calls`` with ``finish_reason`` "tool_calls"; a block that cannot be read stays text (the client sees what
    the model wrote). Without tools, or for a reply cut short ("length"), the text is returned as it is.
    """
    from .calls import ToolCallParseError, parse_reply

    plain = {"role": "assistant", "content": text}
    if not tools_offered or finish_reason != "stop":
        return plain, finish_reason
    try:
        reply = parse_reply(text)
    except ToolCallParseError:
        return plain, finish_reason
    if not reply.calls:
        return plain, finish_reason
    return reply_to_openai(reply, ids), "tool_calls"
