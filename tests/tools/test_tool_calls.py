"""Parsing Olmo-3's <function_calls> text (no eval), rendering it back, and the OpenAI tool_calls mapping."""

from __future__ import annotations

import json

import pytest

from olmo3.tools.calls import (
    CLOSE_TAG,
    OPEN_TAG,
    FunctionCall,
    ParsedReply,
    ToolCallParseError,
    calls_from_openai,
    calls_to_openai,
    parse_calls,
    parse_reply,
    render_block,
)

FC = FunctionCall

# (model output, expected content, expected calls, expected trailing)
GOOD = [
    ("Just text, no tools.", "Just text, no tools.", [], ""),
    ("<function_calls>add(a=1, b=2)</function_calls>", "", [FC("add", {"a": 1, "b": 2})], ""),
    (
        'Let me check.<function_calls>add(a=1.5, b=-2e3)\nread_file(name="notes.txt")</function_calls>',
        "Let me check.",
        [FC("add", {"a": 1.5, "b": -2000.0}), FC("read_file", {"name": "notes.txt"})],
        "",
    ),
    (  # strings holding the parser's own delimiters
        '<function_calls>echo(text="f(x) = \\"a, b\\"; g(y=2))")</function_calls>',
        "",
        [FC("echo", {"text": 'f(x) = "a, b"; g(y=2))'})],
        "",
    ),
    (  # nested JSON, and a string that looks like a call
        '<function_calls>search(query={"terms": ["a(b)", {"x": [1, {"y": null}]}], "n": 3}, '
        'note="read_file(name=1)")</function_calls>',
        "",
        [FC("search", {"query": {"terms": ["a(b)", {"x": [1, {"y": None}]}], "n": 3}, "note": "read_file(name=1)"})],
        "",
    ),
    (  # unicode: escaped or raw, names of people and emoji
        '<function_calls>echo(text="Zürich \\u6771\\u4eac 🙂", who="Ана")</function_calls>',
        "",
        [FC("echo", {"text": "Zürich 東京 🙂", "who": "Ана"})],
        "",
    ),
    (  # a raw newline inside a string (models write code this way), and \n escapes
        '<function_calls>write(path="a.py", body="def f():\n    return 1\\n")</function_calls>',
        "",
        [FC("write", {"path": "a.py", "body": "def f():\n    return 1\n"})],
        "",
    ),
    (  # newlines inside the tags, blank lines, spaces around '=' and a trailing comma
        "<function_calls>\n  add( a = 1 , b=2, )\n\n  add(a=3, b=4)\n</function_calls>",
        "",
        [FC("add", {"a": 1, "b": 2}), FC("add", {"a": 3, "b": 4})],
        "",
    ),
    ("<function_calls>now()</function_calls>", "", [FC("now", {})], ""),
    (  # dotted and dashed names (Ai2's data has `weather.forecast_weather_api`)
        '<function_calls>weather.forecast_weather_api(q="Paris", days=5)\nget-time(tz="UTC")</function_calls>',
        "",
        [FC("weather.forecast_weather_api", {"q": "Paris", "days": 5}), FC("get-time", {"tz": "UTC"})],
        "",
    ),
    (  # Python literals and a single-quoted string, as Python-trained models sometimes write
        "<function_calls>f(a=True, b=None, c='it\\'s (ok)', d=false)</function_calls>",
        "",
        [FC("f", {"a": True, "b": None, "c": "it's (ok)", "d": False})],
        "",
    ),
    (  # text after the block is kept apart
        "<function_calls>add(a=1, b=2)</function_calls> I will wait.",
        "",
        [FC("add", {"a": 1, "b": 2})],
        " I will wait.",
    ),
    (  # two blocks: both calls, in order
        "A<function_calls>add(a=1, b=2)</function_calls>B<function_calls>add(a=3, b=4)</function_calls>",
        "A",
        [FC("add", {"a": 1, "b": 2}), FC("add", {"a": 3, "b": 4})],
        "B",
    ),
    ("<function_calls>a(x=1), b(y=2); c()</function_calls>", "", [FC("a", {"x": 1}), FC("b", {"y": 2}), FC("c")], ""),
]


@pytest.mark.parametrize(("text", "content", "calls", "trailing"), GOOD, ids=range(len(GOOD)))
def test_parses_model_like_outputs(text, content, calls, trailing):
    reply = parse_reply(text)
    assert reply.content == content
    assert list(reply.calls) == calls
    assert reply.trailing == trailing
    assert reply.has_calls == bool(calls)


# (model output, words the error must contain)
BAD = [
    ("<function_calls>add(a=1, b=2)", ["not closed", CLOSE_TAG]),
    ("<function_calls>add(a=1, b=2</function_calls>", ["not closed", "')'"]),
    ("<function_calls>add(1, 2)</function_calls>", ["positional", "key=value"]),
    ("<function_calls>add(a=1, a=2)</function_calls>", ["'a'", "twice"]),
    ("<function_calls>add(a=1 b=2)</function_calls>", ["expected ',' or ')'", "'a'"]),
    ("<function_calls>add(a=)</function_calls>", ["'a'", "not valid JSON"]),
    ("<function_calls>add(a=undefined)</function_calls>", ["'a'", "not valid JSON"]),
    ("<function_calls>add(a=NaN)</function_calls>", ["'a'", "NaN"]),
    ('<function_calls>echo(text="unterminated)</function_calls>', ["'text'", "not valid JSON"]),
    ("<function_calls>echo(text='open)</function_calls>", ["'text'", "not closed"]),
    ("<function_calls>add a=1</function_calls>", ["expected '('", "'add'"]),
    ("<function_calls>(a=1)</function_calls>", ["function name"]),
    ("<function_calls>  \n </function_calls>", ["no function call"]),
    ("<function_calls>add(a: 1)</function_calls>", ["expected '='", "'a'"]),
    ("ok</function_calls>", ["without"]),
    ("<function_calls>x(<function_calls>y()</function_calls>", ["inside"]),
    ("<function_calls>add(a=" + "[" * 50_000 + "]" * 50_000 + ")</function_calls>", ["nested too deeply"]),
]


@pytest.mark.parametrize(("text", "words"), BAD, ids=range(len(BAD)))
def test_broken_calls_say_what_is_wrong(text, words):
    with pytest.raises(ToolCallParseError) as info:
        parse_reply(text)
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert "\n" not in message  # one line: the session shows it and sends it back to the model


def test_error_position_points_into_the_reply():
    text = "Sure.<function_calls>add(a=1)\nadd(b=2, 3)</function_calls>"
    with pytest.raises(ToolCallParseError) as info:
        parse_reply(text)
    assert "line 2" in str(info.value)
    assert text[info.value.position :].startswith("3)")


def test_raw_calls_are_kept_verbatim_for_replay():
    raw = '\nadd( a = 1 ,b=2)\necho(text="x")\n'
    reply = parse_reply(f"Hi.{OPEN_TAG}{raw}{CLOSE_TAG}")
    assert reply.raw_calls == raw
    assert reply == ParsedReply("Hi.", (FC("add", {"a": 1, "b": 2}), FC("echo", {"text": "x"})), raw, "")


def test_render_then_parse_round_trips():
    calls = [
        FC("echo", {"text": 'quotes " and \\ and (parens), commas, = signs\nand a new line', "n": None}),
        FC("search", {"q": {"nested": [1, 2.5, True, {"k": "ünï"}]}, "limit": 10}),
        FC("now", {}),
    ]
    block = render_block(calls)
    assert block.startswith(OPEN_TAG) and block.endswith(CLOSE_TAG)
    assert block.count("\n") == 2  # one call per line; the new line in the string is escaped
    assert list(parse_reply(block).calls) == calls
    assert FC("f", {"b": 1, "a": "é"}).render() == 'f(b=1, a="é")'  # argument order kept; no ASCII escaping


def test_parse_calls_refuses_huge_input():
    with pytest.raises(ToolCallParseError, match="too long"):
        parse_calls("f(a=1)\n" * 200_000)


def test_openai_tool_calls_round_trip():
    calls = [FC("add", {"a": 1, "b": 2}), FC("echo", {"text": "日本"})]
    openai = calls_to_openai(calls, ids=["call_1", "call_2"])
    assert openai[0] == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
    }
    assert json.loads(openai[1]["function"]["arguments"]) == {"text": "日本"}
    assert calls_from_openai(openai) == calls
    made = calls_to_openai(calls)
    assert len({c["id"] for c in made}) == 2 and all(c["id"].startswith("call_") for c in made)
    # the API's arguments are a JSON string, but an object (or an empty string) is accepted too
    assert calls_from_openai([{"function": {"name": "now", "arguments": ""}}]) == [FC("now", {})]
    assert calls_from_openai([{"function": {"name": "f", "arguments": {"x": [1]}}}]) == [FC("f", {"x": [1]})]


@pytest.mark.parametrize(
    ("tool_calls", "words"),
    [
        ([{"function": {"arguments": "{}"}}], "no function name"),
        ([{"function": {"name": "bad name", "arguments": "{}"}}], "not a valid function name"),
        ([{"function": {"name": "f", "arguments": "{oops"}}], "not valid JSON"),
        ([{"function": {"name": "f", "arguments": "[1]"}}], "JSON object"),
        ([{"function": {"name": "f", "arguments": '{"a b": 1}'}}], "argument name"),
        ([{"function": {"name": "f", "arguments": '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"}}], "nested"),
    ],
)
def test_openai_tool_calls_refused(tool_calls, words):
    with pytest.raises(ValueError, match=words):
        calls_from_openai(tool_calls)
