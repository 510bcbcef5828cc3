"""Template messages for conversations with tools, rendered by the real Olmo-3.1 Instruct template."""

from __future__ import annotations

import json

import pytest
from conftest import real_template

from olmo3.tools.calls import FunctionCall, ToolCallParseError, calls_to_openai, parse_reply, render_calls
from olmo3.tools.info import ToolInfo, ToolResult, declined_result, error_result
from olmo3.tools.messages import (
    assistant_message,
    environment_message,
    openai_messages_to_template,
    openai_tools_to_definitions,
    render_kwargs,
    reply_message,
    reply_to_openai,
    system_message,
    tool_definitions,
    user_message,
)

TOOLS = [
    ToolInfo(
        name="add",
        server="math",
        tool="add",
        description="Add two numbers.",
        input_schema={"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
    ),
    ToolInfo(
        name="files__read",
        server="files",
        tool="read",
        description="Read a file — by name (UTF-8).",
        input_schema={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    ),
    ToolInfo(name="off", server="x", tool="off", enabled=False),
]
DEFS_JSON = json.dumps(tool_definitions(TOOLS), ensure_ascii=False)
DEFAULT_INTRO = (
    "You are Olmo, a helpful AI assistant built by Ai2. Your date cutoff is December 2024, and your model weights "
    "are available at https://huggingface.co/allenai. "
)
WITH_FUNCTIONS = (
    "You are provided with function signatures within <functions></functions> XML tags. You may call one or more "
    "functions to assist with the user query. Output any function calls within <function_calls></function_calls> "
    "XML tags. Do not make assumptions about what values to plug into functions."
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from olmo3.model.tiny import make_tokenizer_files

    folder = tmp_path_factory.mktemp("olmo31-instruct-tokenizer")
    make_tokenizer_files(folder, template=real_template("olmo31_instruct_lmstudio_community.jinja"))
    return AutoTokenizer.from_pretrained(folder)


def render(tokenizer, messages, tools, prompt=True):
    return tokenizer.apply_chat_template(messages, **render_kwargs(tools), tokenize=False, add_generation_prompt=prompt)


def test_tool_definitions_are_openai_function_objects():
    defs = tool_definitions(TOOLS)
    assert [d["function"]["name"] for d in defs] == ["add", "files__read"]  # switched-off tools are not offered
    assert defs[0] == {
        "type": "function",
        "function": {"name": "add", "description": "Add two numbers.", "parameters": TOOLS[0].input_schema},
    }
    assert tool_definitions([]) is None and render_kwargs([]) == {"tools": None}


def test_default_system_turn_lists_the_tools(tokenizer):
    text = render(tokenizer, [user_message("What is 2+3?")], TOOLS)
    assert text == (
        f"<|im_start|>system\n{DEFAULT_INTRO}{WITH_FUNCTIONS}<functions>{DEFS_JSON}</functions><|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "—" in DEFS_JSON and "\\u" not in DEFS_JSON  # tojson keeps non-ASCII as is, like json.dumps here


def test_no_tools_renders_no_functions(tokenizer):
    assert render(tokenizer, [user_message("hi")], []) == (
        f"<|im_start|>system\n{DEFAULT_INTRO}You do not currently have access to any functions. "
        "<functions></functions><|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    # with a system prompt, [] would have rendered an empty "<functions>[]</functions>"
    text = render(tokenizer, [system_message("Be brief.", with_tools=False), user_message("hi")], [])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n") and "<functions>" not in text


def test_system_prompt_with_tools_has_the_training_space(tokenizer):
    messages = [system_message("Be brief.", with_tools=True), user_message("hi")]
    assert render(tokenizer, messages, TOOLS).startswith(
        f"<|im_start|>system\nBe brief. <functions>{DEFS_JSON}</functions><|im_end|>\n<|im_start|>user\nhi"
    )
    assert system_message("Ends with a new line\n", with_tools=True)["content"] == "Ends with a new line\n"


@pytest.mark.parametrize("system", [None, "You help with sums."])
def test_a_tool_turn_continues_exactly_what_the_model_wrote(tokenizer, system):
    """The history after a call renders the model's reply verbatim, then <|im_end|>, then the environment turns:
    the cached generation (reply + its <|im_end|> stop) is a prefix of the next prompt, token for token."""
    head = [system_message(system, with_tools=True)] if system else []
    history = [*head, user_message("Add 2 and 3, and read notes (draft).txt")]
    prompt = render(tokenizer, history, TOOLS)
    output = 'I\'ll do both.<function_calls>add(a=2, b=3)\nfiles__read(name="notes (draft).txt")</function_calls>'
    reply = parse_reply(output)
    assert [c.name for c in reply.calls] == ["add", "files__read"]
    results = [ToolResult("5"), ToolResult("Error: notes (draft).txt: no such file", is_error=True)]
    history += [reply_message(reply), *(environment_message(r) for r in results)]
    follow_up = render(tokenizer, history, TOOLS)
    assert follow_up == (
        prompt
        + output
        + "<|im_end|>\n"
        + "<|im_start|>environment\n5<|im_end|>\n"
        + "<|im_start|>environment\nError: notes (draft).txt: no such file<|im_end|>\n"
        + "<|im_start|>assistant\n"
    )
    # and the final answer closes the conversation the way the template ends a last assistant message
    done = render(tokenizer, [*history, assistant_message("2 + 3 = 5; the file is missing.")], TOOLS, prompt=False)
    assert done == follow_up + "2 + 3 = 5; the file is missing.<|endoftext|>"


def test_calls_given_as_tool_calls_render_like_our_renderer(tokenizer):
    calls = [
        FunctionCall("files__read", {"name": 'a "quoted" (name), with = signs\nand lines', "n": None}),
        FunctionCall("add", {"a": 1.5, "b": {"nested": ["ü", True]}}),
        FunctionCall("now", {}),
    ]
    base = [user_message("go")]
    from_calls = render(tokenizer, [*base, assistant_message("Sure.", calls), environment_message("ok")], TOOLS)
    verbatim = render(
        tokenizer,
        [*base, assistant_message("Sure.", raw_calls=render_calls(calls)), environment_message("ok")],
        TOOLS,
    )
    assert from_calls == verbatim
    assert f"Sure.<function_calls>{render_calls(calls)}</function_calls><|im_end|>\n" in from_calls
    assert list(parse_reply(from_calls.split("assistant\n", 1)[1]).calls) == calls


def test_openai_messages_map_to_the_same_render(tokenizer):
    calls = [FunctionCall("add", {"a": 2, "b": 3}), FunctionCall("files__read", {"name": "x.txt"})]
    openai_calls = calls_to_openai(calls, ids=["call_a", "call_b"])
    openai = [
        {"role": "developer", "content": "You help with sums."},
        {"role": "user", "content": [{"type": "text", "text": "Add"}, {"type": "text", "text": "and read"}]},
        {"role": "assistant", "content": None, "tool_calls": openai_calls},
        # results may come back in any order: the ids put them in the order of the calls
        {"role": "tool", "tool_call_id": "call_b", "content": "contents"},
        {"role": "tool", "tool_call_id": "call_a", "content": "5"},
    ]
    mapped = openai_messages_to_template(openai, with_tools=True)
    ours = [
        system_message("You help with sums.", with_tools=True),
        user_message("Add\nand read"),
        assistant_message("", calls),
        environment_message("5"),
        environment_message("contents"),
    ]
    assert mapped == ours
    openai_tools = [{"type": "function", "function": d["function"]} for d in tool_definitions(TOOLS)]
    defs = openai_tools_to_definitions(openai_tools)
    text = tokenizer.apply_chat_template(mapped, tools=defs, tokenize=False, add_generation_prompt=True)
    assert text == render(tokenizer, ours, TOOLS)
    assert "<|im_start|>environment\n5<|im_end|>\n<|im_start|>environment\ncontents<|im_end|>\n" in text


def test_openai_refusals():
    with pytest.raises(ValueError, match="only text content"):
        openai_messages_to_template([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])
    with pytest.raises(ValueError, match="unknown role"):
        openai_messages_to_template([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="only function tools"):
        openai_tools_to_definitions([{"type": "web_search"}])
    assert openai_tools_to_definitions([]) is None


def test_reply_to_openai():
    reply = parse_reply("Checking.<function_calls>add(a=1, b=2)</function_calls>")
    message = reply_to_openai(reply, ids=["call_1"])
    assert message == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
        ],
    }
    assert reply_to_openai(parse_reply("<function_calls>now()</function_calls>"))["content"] is None
    assert reply_to_openai(parse_reply("Just text.")) == {"role": "assistant", "content": "Just text."}


def test_error_and_declined_results_become_environment_turns():
    declined = declined_result("add", "math")
    assert declined.is_error and declined.text.startswith("Error: the user declined")
    assert environment_message(declined) == {"role": "environment", "content": declined.text}
    with pytest.raises(ToolCallParseError) as info:
        parse_reply("<function_calls>add(1)</function_calls>")
    result = error_result(f"could not read the call: {info.value}")
    assert result.text.startswith("Error: could not read the call: 'add' has a positional argument")


def test_a_completion_becomes_openai_tool_calls_only_when_it_is_a_call():
    from olmo3.tools.messages import completion_to_openai

    text = 'Checking.<function_calls>read_file(name="a (1).txt")\nadd(a=1, b=2)</function_calls>'
    message, finish = completion_to_openai(text, "stop", tools_offered=True, ids=["call_1", "call_2"])
    assert finish == "tool_calls" and message["content"] == "Checking."
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["read_file", "add"]
    assert message["tool_calls"][0]["function"]["arguments"] == '{"name": "a (1).txt"}'
    assert message["tool_calls"][1]["id"] == "call_2"
    # Back through the OpenAI mapping, the calls render as the model wrote them.
    again = openai_messages_to_template([message], with_tools=True)[0]
    assert [c["function"]["name"] for c in again["tool_calls"]] == ["read_file", "add"]
    assert completion_to_openai(text, "length", tools_offered=True) == (
        {"role": "assistant", "content": text},
        "length",
    )
    assert completion_to_openai(text, "stop", tools_offered=False)[1] == "stop"
    broken = "<function_calls>add(a=</function_calls>"
    assert completion_to_openai(broken, "stop", tools_offered=True) == (
        {"role": "assistant", "content": broken},
        "stop",
    )
    assert completion_to_openai("Hello.", "stop", tools_offered=True)[1] == "stop"
