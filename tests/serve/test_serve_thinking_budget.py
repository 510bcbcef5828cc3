"""Olmo's ``thinking_budget`` extension through the official ``openai`` client (``extra_body``): bounded, refused
with a 400 naming it when bad, and a Think model's reasoning closes after the budget."""

from __future__ import annotations

import openai
import pytest

from olmo3.chat.engine import Engine
from olmo3.serve.server import LocalServer, ServeConfig


@pytest.fixture
def think_server(tmp_path, think_dir):
    engine = Engine(None, cache_dir=tmp_path / "kv")
    engine.start()
    assert engine.wait(engine.load_model(think_dir), 120)
    server = LocalServer(engine, ServeConfig(port=0))
    server.start()
    try:
        yield openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=120), think_dir.name
    finally:
        server.stop()
        assert engine.shutdown(60)


def test_the_thinking_budget_closes_the_reasoning(think_server, think):
    client, model = think_server
    _model, tok, _bias = think
    messages = [{"role": "user", "content": "Think about it."}]
    kw = {"model": model, "messages": messages, "temperature": 1.0, "seed": 3, "max_tokens": 60}
    free = client.chat.completions.create(**kw)
    budgeted = client.chat.completions.create(**kw, extra_body={"thinking_budget": 3})
    free_reasoning = free.choices[0].message.model_extra.get("reasoning_content") or ""
    reasoning = budgeted.choices[0].message.model_extra.get("reasoning_content") or ""
    assert len(tok.encode(free_reasoning, add_special_tokens=False)) > 3  # without a budget it goes on
    assert len(tok.encode(reasoning, add_special_tokens=False)) <= 3 + 1
    assert client.get("/olmo/info", cast_to=object)["capabilities"] == {"thinking_budget": True}


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True, 1 << 21])
def test_a_bad_thinking_budget_is_a_400_naming_it(think_server, bad):
    client, model = think_server
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], extra_body={"thinking_budget": bad}
        )
    assert info.value.body["param"] == "thinking_budget"
