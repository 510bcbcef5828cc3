"""Olmo-3's function calls as text: parse what the model writes, render what the template writes.

Olmo-3 Instruct writes its calls after any answer text, in one block::

    Let me check.<function_calls>add(a=1, b=2)
    read_file(name="notes (draft).txt")</function_calls>

one call per line, keyword arguments only, each value JSON (the Olmo-3.1 template renders
``key ~ '=' ~ (value | tojson)``, and transformers' ``tojson`` is ``json.dumps(value, ensure_ascii=False)``).

The parser never evaluates anything. It walks the text with a cursor: a name, ``(``, then for each argument
a key, ``=`` and one JSON value read by ``json.JSONDecoder.raw_decode`` at that exact position. So a string
value may hold parentheses, commas, quotes, ``=``, newlines or nested JSON: the decoder, not a regex, decides
where it ends. Models trained on Python-looking calls sometimes write ``True``/``False``/``None`` or a
single-quoted string; those few literals are accepted too (a single-quoted string is scanned here and only that
literal token is handed to ``ast.literal_eval``, which parses literals and runs nothing).

Anything else is a ``ToolCallParseError`` whose message says what is wrong and where, because the session shows
it and sends it back to the model as the call's error result, which is how the model gets to fix its call.

``calls_from_openai`` / ``calls_to_openai`` map to the OpenAI chat format's ``tool_calls`` (arguments as a JSON
string), for a later OpenAI-compatible server.
"""

from __future__ import annotations

import ast
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..fileio import loads_json

OPEN_TAG = "<function_calls>"
CLOSE_TAG = "</function_calls>"

# MCP tool names are 1-128 of [A-Za-z0-9_.-] (the spec's SEP-986); Ai2's data also has dotted names such as
# ``weather.forecast_weather_api``. Keys are JSON-schema property names, which are usually identifiers.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_KEY_RE = re.compile(r"[^\W\d][\w.\-$]*")
_PY_LITERALS: dict[str, Any] = {"True": True, "False": False, "None": None}
_VALUE_START = set('"[{-0123456789') | {"'"}
_MAX_BLOCK_CHARS = 1_000_000  # a model's reply is bounded by max_tokens; this bounds a pasted one


class ToolCallParseError(ValueError):
    """A ``<function_calls>`` block that cannot be read; ``str(e)`` says what is wrong and where."""

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(strict=False, parse_constant=_json_constant)  # strict=False: raw newlines in strings


@dataclass(frozen=True)
class FunctionCall:
    """One call: the tool's name and its keyword arguments (JSON values, in the order written)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        """The call exactly as the Olmo-3.1 template renders an assistant ``tool_calls`` entry."""
        args = ", ".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in self.arguments.items())
        return f"{self.name}({args})"


@dataclass(frozen=True)
class ParsedReply:
    """A model reply split around its calls.

    ``content`` is the text before ``<function_calls>`` (what the person reads); ``raw_calls`` is the text
    between the tags, verbatim, so the history can replay exactly what the model wrote (the template's
    ``function_calls`` key); ``trailing`` is any text after the block (models rarely write any).
    """

    content: str
    calls: tuple[FunctionCall, ...] = ()
    raw_calls: str | None = None
    trailing: str = ""

    @property
    def has_calls(self) -> bool:
        return self.raw_calls is not None


def render_calls(calls: Iterable[FunctionCall]) -> str:
    """Calls joined one per line, as between the template's ``<function_calls>`` tags."""
    return "\n".join(call.render() for call in calls)


def render_block(calls: Iterable[FunctionCall]) -> str:
    """The whole block, tags included, as the template renders it after the assistant's content."""
    return OPEN_TAG + render_calls(calls) + CLOSE_TAG


def parse_reply(text: str) -> ParsedReply:
    """Split a model reply into its answer text and its calls.

    A reply with no ``<function_calls>`` is plain content. A reply with a block that never closes (the model
    ran out of tokens, or stopped early) is an error: running half a call would be worse. Should a model write
    a second block, its calls are taken too, in order.
    """
    start = text.find(OPEN_TAG)
    if start < 0:
        stray = text.find(CLOSE_TAG)
        if stray >= 0:
            raise ToolCallParseError(f"{CLOSE_TAG} without a {OPEN_TAG} before it", position=stray)
        return ParsedReply(content=text)
    content = text[:start]
    calls: list[FunctionCall] = []
    raws: list[str] = []
    trailing: list[str] = []
    pos = start
    while pos >= 0:
        body_start = pos + len(OPEN_TAG)
        end = text.find(CLOSE_TAG, body_start)
        if end < 0:
            raise ToolCallParseError(f"the {OPEN_TAG} block is not closed: {CLOSE_TAG} is missing", position=len(text))
        raw = text[body_start:end]
        nested = raw.find(OPEN_TAG)
        if nested >= 0:
            raise ToolCallParseError(f"a {OPEN_TAG} inside another one", position=body_start + nested)
        calls.extend(parse_calls(raw, offset=body_start))
        raws.append(raw)
        after = end + len(CLOSE_TAG)
        pos = text.find(OPEN_TAG, after)
        trailing.append(text[after : pos if pos >= 0 else len(text)])
    return ParsedReply(content=content, calls=tuple(calls), raw_calls="\n".join(raws), trailing="".join(trailing))


def parse_calls(block: str, *, offset: int = 0) -> list[FunctionCall]:
    """Parse the text between the tags: calls separated by new lines (or ``,``/``;``), keyword arguments only.

    ``offset`` is where ``block`` starts in a larger text, so error positions point into that text.
    """
    if len(block) > _MAX_BLOCK_CHARS:
        raise ToolCallParseError(f"the calls are too long ({len(block):,} characters)")
    return _Parser(block, offset).calls()


class _Parser:
    """A cursor over one block; each method reads one piece or raises with the position it stopped at."""

    def __init__(self, text: str, offset: int) -> None:
        self.text = text
        self.offset = offset
        self.pos = 0

    def fail(self, message: str, pos: int | None = None) -> ToolCallParseError:
        at = self.pos if pos is None else pos
        line = self.text.count("\n", 0, at) + 1
        column = at - (self.text.rfind("\n", 0, at) + 1) + 1
        found = self.text[at : at + 20]
        where = f"at line {line}, column {column}"
        shown = f" (found {found!r})" if found else " (found the end)"
        return ToolCallParseError(f"{message} {where}{shown}", position=self.offset + at)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def calls(self) -> list[FunctionCall]:
        out: list[FunctionCall] = []
        self.skip_space()
        if self.pos >= len(self.text):
            raise self.fail("no function call in the block")
        while self.pos < len(self.text):
            out.append(self.call())
            self.skip_space()
            if self.peek() in (",", ";"):
                self.pos += 1
                self.skip_space()
        return out

    def call(self) -> FunctionCall:
        m = _NAME_RE.match(self.text, self.pos)
        if m is None:
            raise self.fail("expected a function name")
        name = m.group()
        self.pos = m.end()
        self.skip_space()
        if self.peek() != "(":
            raise self.fail(f"expected '(' after the function name {name!r}")
        self.pos += 1
        arguments: dict[str, Any] = {}
        self.skip_space()
        while self.peek() != ")":
            if not self.peek():
                raise self.fail(f"the call to {name!r} is not closed: ')' is missing")
            key = self.key(name)
            if key in arguments:
                raise self.fail(f"the argument {key!r} of {name!r} is given twice")
            self.skip_space()
            arguments[key] = self.value(name, key)
            self.skip_space()
            if self.peek() == ",":
                self.pos += 1
                self.skip_space()
            elif not self.peek():
                raise self.fail(f"the call to {name!r} is not closed: ')' is missing")
            elif self.peek() != ")":
                raise self.fail(f"expected ',' or ')' after the value of {key!r} in {name!r}")
        self.pos += 1
        return FunctionCall(name, arguments)

    def key(self, name: str) -> str:
        start = self.pos
        m = _KEY_RE.match(self.text, self.pos)
        if m is None or m.group() in _PY_LITERALS:
            if self.peek() in _VALUE_START or m is not None:
                raise self.fail(f"{name!r} has a positional argument; write each one as key=value")
            raise self.fail(f"expected an argument name in {name!r}")
        self.pos = m.end()
        self.skip_space()
        if self.peek() != "=":
            raise self.fail(f"expected '=' after the argument name {m.group()!r} in {name!r}", start)
        self.pos += 1
        return m.group()

    def value(self, name: str, key: str) -> Any:
        pos = self.pos
        if self.peek() == "'":
            return self.single_quoted(name, key)
        for word, value in _PY_LITERALS.items():
            if self.text.startswith(word, pos) and not _is_word_char(self.text, pos + len(word)):
                self.pos = pos + len(word)
                return value
        try:
            value, end = _DECODER.raw_decode(self.text, pos)
        except RecursionError:
            raise self.fail(f"the value of {key!r} in {name!r} is nested too deeply") from None
        except ValueError as e:
            reason = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
            at = e.pos if isinstance(e, json.JSONDecodeError) else pos
            raise self.fail(f"the value of {key!r} in {name!r} is not valid JSON: {reason}", at) from None
        self.pos = end
        return value

    def single_quoted(self, name: str, key: str) -> str:
        """A Python single-quoted string: find its end (honouring backslashes), then read just that token."""
        start = self.pos
        i = start + 1
        while i < len(self.text):
            ch = self.text[i]
            if ch == "\\":
                i += 2
                continue
            if ch == "'":
                break
            i += 1
        else:
            raise self.fail(f"the string value of {key!r} in {name!r} is not closed", start)
        token = self.text[start : i + 1]
        try:
            value = ast.literal_eval(token)
        except (ValueError, SyntaxError):
            raise self.fail(f"the string value of {key!r} in {name!r} is not valid", start) from None
        self.pos = i + 1
        return str(value)


def _is_word_char(text: str, pos: int) -> bool:
    return pos < len(text) and (text[pos].isalnum() or text[pos] == "_")


# --- The OpenAI chat format -------------------------------------------------------------------------------------


def calls_to_openai(calls: Sequence[FunctionCall], ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Olmo calls as OpenAI ``tool_calls`` (arguments as a JSON string). Olmo has no call ids, so new ones are
    made unless given; results are matched to calls by position."""
    if ids is None:
        ids = [f"call_{uuid.uuid4().hex[:24]}" for _ in calls]
    if len(ids) != len(calls):
        raise ValueError(f"{len(ids)} ids for {len(calls)} calls")
    return [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
        }
        for call, call_id in zip(calls, ids, strict=True)
    ]


def calls_from_openai(tool_calls: Sequence[Mapping[str, Any]]) -> list[FunctionCall]:
    """OpenAI ``tool_calls`` as Olmo calls. Arguments may be a JSON string (the API's form) or an object."""
    out: list[FunctionCall] = []
    for i, item in enumerate(tool_calls):
        function = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ValueError(f"tool_calls[{i}] has no function name")
        name = function["name"]
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"tool_calls[{i}]: {name!r} is not a valid function name")
        raw = function.get("arguments", {})
        if isinstance(raw, str):
            try:
                raw = loads_json(raw, what=f"tool_calls[{i}] ({name}) arguments") if raw.strip() else {}
            except ValueError as e:  # bad JSON, or nested deeper than JSON from outside may be
                raise ValueError(f"tool_calls[{i}] ({name}): arguments are not valid JSON: {e}") from None
        if not isinstance(raw, Mapping):
            raise ValueError(f"tool_calls[{i}] ({name}): arguments must be a JSON object")
        for key in raw:
            if not _KEY_RE.fullmatch(key) or key in _PY_LITERALS:
                raise ValueError(f"tool_calls[{i}] ({name}): {key!r} cannot be written as an Olmo argument name")
        out.append(FunctionCall(name, dict(raw)))
    return out
