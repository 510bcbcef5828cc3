"""OpenAI tools through the local server and the official ``openai`` client: ``tools`` and ``tool`` messages in,
``tool_calls`` with ``finish_reason: "tool_calls"`` out, mapped to and from Olmo-3's own format, cache reused.

The server runs as the app runs it (a thread over an in-process engine), so the tiny model can be made to write a
call: the engine's logits processor forces each reply's text (forced decoding, ``tool_helpers.Script``)."""

from __future__ import annotations

import json

import openai
import pytest
from serve_server import render
from tool_helpers import Script

from olmo3.chat.engine import Engine
from olmo3.serve.server import LocalServer, ServeConfig

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
    },
}
CALL = 'Let me add.<function_calls>add(a=2, b=40)\nread_file(name="notes (1).txt")</function_calls>'


@pytest.fixture
def served(tmp_path, instruct_dir, instruct):
    """(openai client, model id, the forcing script, tokenizer) over a LocalServer on its own thread."""
    _model, tok, _bias = instruct
    script = Script(tok)
    engine = Engine(None, cache_dir=tmp_path / "kv", logits_processors=[script])
    engine.start()
    assert engine.wait(engine.load_model(instruct_dir), 120)
    server = LocalServer(engine, ServeConfig(port=0))
    server.start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=120)
        yield client, instruct_dir.name, script, tok
    finally:
        server.stop()
        assert engine.shutdown(60)


def test_tool_calls_round_trip_with_the_openai_client(served):
    client, model, script, tok = served
    user = {"role": "user", "content": "What is 2 + 40? Then read my notes."}
    script.add(tok, CALL)
    first = client.chat.completions.create(model=model, messages=[user], tools=[ADD], temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me add."
    calls = choice.message.tool_calls
    assert [(c.type, c.function.name) for c in calls] == [("function", "add"), ("function", "read_file")]
    assert json.loads(calls[0].function.arguments) == {"a": 2, "b": 40}
    assert json.loads(calls[1].function.arguments) == {"name": "notes (1).txt"}
    assert len({c.id for c in calls}) == 2

    # The agent runs the calls and sends the results back (out of order: the ids put them in call order).
    script.add(tok, "The sum is 42, and your notes say hi.")
    messages = [
        user,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": calls[1].id, "content": "hi"},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "42"},
    ]
    second = client.chat.completions.create(model=model, messages=messages, tools=[ADD], temperature=0)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "The sum is 42, and your notes say hi."
    assert not second.choices[0].message.tool_calls
    # The calls came back as the model wrote them, so the whole first turn was reused from the cache: the
    # prompt, the reply and its stop token; only the environment turns and the new generation prompt were read.
    used = second.usage
    assert used.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens + first.usage.completion_tokens + 1
    # And what the model read is the real template's rendering of the conversation in Olmo's format: the first
    # turn as it was (prompt + the reply as written), then the results in call order, tokenized as transformers does.
    calls_text = 'add(a=2, b=40)\nread_file(name="notes (1).txt")'
    olmo = [
        {"role": "user", "content": user["content"]},
        {"role": "assistant", "content": "Let me add.", "function_calls": calls_text},
        {"role": "environment", "content": "42"},
        {"role": "environment", "content": "hi"},
    ]
    expected = render_with_tools(tok, olmo, [ADD])
    first_text = render_with_tools(tok, olmo[:1], [ADD]) + CALL + "<|im_end|>"
    assert expected.startswith(first_text)
    fed = used.prompt_tokens - used.prompt_tokens_details.cached_tokens
    assert fed == len(tok.encode(expected[len(first_text) :], add_special_tokens=False))


def render_with_tools(tok, messages, tools):
    return str(tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True))


def test_streamed_tool_calls_and_a_block_that_is_no_call(served):
    client, model, script, tok = served
    user = [{"role": "user", "content": "Add 2 and 40."}]
    script.add(tok, CALL)
    content, deltas, finish = [], [], None
    stream = client.chat.completions.create(model=model, messages=user, tools=[ADD], temperature=0, stream=True)
    for chunk in stream:
        for c in chunk.choices:
            content.append(c.delta.content or "")
            deltas += c.delta.tool_calls or []
            finish = c.finish_reason or finish
    assert "".join(content) == "Let me add." and finish == "tool_calls"  # the block never streams as text
    assert [(d.index, d.function.name) for d in deltas] == [(0, "add"), (1, "read_file")]
    assert json.loads(deltas[0].function.arguments) == {"a": 2, "b": 40}

    # Text that only looks like a block is text; without tools the block is just what the model wrote.
    broken = "Hmm.<function_calls>add(a=</function_calls>"
    script.add(tok, broken, broken)
    r = client.chat.completions.create(model=model, messages=user, tools=[ADD], temperature=0)
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == broken
    r = client.chat.completions.create(model=model, messages=user, temperature=0)
    assert r.choices[0].message.content == broken and not r.choices[0].message.tool_calls
    # tool_choice "none": the tools are not shown to the model at all (the prompt is the no-tools one).
    script.add(tok, "No tools.")
    r = client.chat.completions.create(model=model, messages=user, tools=[ADD], tool_choice="none", temperature=0)
    assert r.usage.prompt_tokens == len(tok.encode(render(tok, user), add_special_tokens=False))


def test_tools_on_a_model_without_function_calling_are_refused(tmp_path, think_dir):
    engine = Engine(None, cache_dir=tmp_path / "kv")
    engine.start()
    assert engine.wait(engine.load_model(think_dir), 120)
    server = LocalServer(engine, ServeConfig(port=0))
    server.start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=120)
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(
                model=think_dir.name, messages=[{"role": "user", "content": "hi"}], tools=[ADD], max_tokens=2
            )
        assert e.value.body["param"] == "tools" and e.value.body["code"] == "tools_not_supported"
    finally:
        server.stop()
        assert engine.shutdown(60)
