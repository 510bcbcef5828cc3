"""Cache reuse across stateless requests: follow-ups past the sliding window, edits, interleaved clients, restarts.

Every reply is also checked against a cache-less greedy generation over the same rendered prompt, so a reused
cache that held the wrong tokens would show as a different answer, not only as a number.
"""

from __future__ import annotations

import re

from serve_server import ServeProcess, reference, render

from .conftest import WINDOW

TURN_TOKENS = 10


def turn(server, model_tok_bias, messages, **kw):
    """Send ``messages``; check the reply against the reference; return (reply text, usage)."""
    model, tok, bias = model_tok_bias
    r = server.client().chat.completions.create(
        model=server.model, messages=messages, temperature=0, max_tokens=TURN_TOKENS, logit_bias=bias, **kw
    )
    reply = r.choices[0].message
    assert reply.content == reference(model, tok, render(tok, messages), TURN_TOKENS, bias)
    return reply, r.usage


def transcript(usage) -> int:
    """Tokens a conversation's cache holds after a turn: the prompt and every generated token."""
    return usage.prompt_tokens + usage.completion_tokens


def test_six_turns_past_three_windows_reuse_the_history_and_an_edit_reuses_its_snapshot(instruct_server, instruct):
    history = [{"role": "user", "content": "Let us talk about sliding window caches."}]
    usages = []
    for i in range(6):
        reply, usage = turn(instruct_server, instruct, history)
        if usages:  # every follow-up: the whole previous conversation came from the cache
            assert usage.prompt_tokens_details.cached_tokens == transcript(usages[-1]), i
        usages.append(usage)
        history += [{"role": "assistant", "content": reply.content}, {"role": "user", "content": f"And then {i}?"}]
    assert usages[-1].prompt_tokens > 3 * WINDOW

    # Edit turn 2 (its user message): the snapshot taken after turn 1 holds everything before it.
    edited = [*history[:2], {"role": "user", "content": "Something else entirely."}]
    _, usage = turn(instruct_server, instruct, edited)
    assert usage.prompt_tokens_details.cached_tokens == transcript(usages[0])
    # ...and the original branch continues from its own cache.
    _, usage = turn(instruct_server, instruct, history)
    assert usage.prompt_tokens_details.cached_tokens >= transcript(usages[-1]) - 1


def test_two_interleaved_conversations_keep_their_caches(instruct_server, instruct):
    a = [{"role": "user", "content": "First client: tell me about keys."}]
    b = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Second client: values?"}]
    last: dict[str, int] = {}
    for i in range(3):
        for name, conv in (("a", a), ("b", b)):
            reply, usage = turn(instruct_server, instruct, conv)
            if name in last:
                assert usage.prompt_tokens_details.cached_tokens == last[name], (name, i)
            last[name] = transcript(usage)
            conv += [{"role": "assistant", "content": reply.content}, {"role": "user", "content": f"More {name}{i}."}]


def test_after_a_restart_the_next_follow_up_hits_the_disk_tier(instruct_dir, instruct, tmp_path):
    server = ServeProcess(instruct_dir, tmp_path / "kv")
    history = [{"role": "user", "content": "Remember this conversation."}]
    for i in range(3):
        reply, usage = turn(server, instruct, history)
        history += [{"role": "assistant", "content": reply.content}, {"role": "user", "content": f"Next {i}."}]
    assert server.stop() == 0, server.log()  # SIGTERM: caches are spilled, the exit is clean
    assert len(list((tmp_path / "kv" / "serve").glob("*.safetensors"))) == 1

    server = ServeProcess(instruct_dir, tmp_path / "kv")
    try:
        _, after = turn(server, instruct, history)
        assert after.prompt_tokens_details.cached_tokens == transcript(usage)
        assert re.search(r"\(\d+ cached, disk\)", server.log())
    finally:
        assert server.stop() == 0


def test_think_streams_reasoning_and_follow_ups_reuse_the_prompt_checkpoint(think_dir, think, tmp_path):
    model, tok, bias = think
    server = ServeProcess(think_dir, tmp_path / "kv")
    c = server.client()
    try:
        messages = [{"role": "user", "content": "Think about the fox."}]
        expected = reference(model, tok, render(tok, messages), TURN_TOKENS, bias)
        params = dict(model=server.model, temperature=0, max_tokens=TURN_TOKENS, logit_bias=bias)
        r = c.chat.completions.create(messages=messages, **params)
        first = r.usage
        # No </think> within ten tokens: all of it is reasoning.
        assert r.choices[0].message.reasoning_content == expected and r.choices[0].message.content == ""
        deltas = [ch.choices[0].delta for ch in c.chat.completions.create(messages=messages, stream=True, **params)]
        assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == expected
        assert not "".join(d.content or "" for d in deltas)
        # A repeated request restores the checkpoint taken before <think>: only the generation prompt's tail is fed.
        r = c.chat.completions.create(messages=messages, **params)
        assert first.prompt_tokens - 8 <= r.usage.prompt_tokens_details.cached_tokens < first.prompt_tokens

        # Clients send replies back without their reasoning: the history diverges right after
        # "<|im_start|>assistant\n", where the checkpoint is.
        follow = [*messages, {"role": "assistant", "content": ""}, {"role": "user", "content": "And the dog?"}]
        prompt_1 = len(tok.encode(render(tok, messages), add_special_tokens=False))
        r = c.chat.completions.create(messages=follow, **params)
        assert r.choices[0].message.reasoning_content == reference(model, tok, render(tok, follow), TURN_TOKENS, bias)
        assert prompt_1 - 8 <= r.usage.prompt_tokens_details.cached_tokens < prompt_1

        # A client that sends the reasoning back continues the live cache: the whole transcript is reused.
        back = {"role": "assistant", "content": "", "reasoning_content": r.choices[0].message.reasoning_content}
        again = [*follow, back, {"role": "user", "content": "Why?"}]
        before = r.usage
        r = c.chat.completions.create(messages=again, **params)
        assert r.usage.prompt_tokens_details.cached_tokens == transcript(before)
        written = {"role": "assistant", "content": f"<think>{back['reasoning_content']}</think>"}
        as_written = [*follow, written, again[-1]]
        assert r.choices[0].message.reasoning_content == reference(
            model, tok, render(tok, as_written), TURN_TOKENS, bias
        )
    finally:
        assert server.stop() == 0
