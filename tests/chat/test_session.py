"""ChatSession: token-exact follow-ups, reconciliation, snapshots, branches, overflow, cancel, Think."""

from __future__ import annotations

import mlx.core as mx
import pytest
from conftest import real_template
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import KVCache, RotatingKVCache

from olmo3.chat import kvcache
from olmo3.chat.events import PrefillProgress, TextDelta, TurnFinished
from olmo3.chat.session import ChatSession, ContextOverflowError

PROMPTS = [
    "Hello! Tell me about the cache.",
    "What is sliding window attention?",
    "Write fibonacci in python.",
    "And the answer is?",
    "Thank you, one more time please.",
]


def run(events) -> tuple[TurnFinished, list]:
    """Drain a turn; return its TurnFinished and every event."""
    all_events = list(events)
    fins = [e for e in all_events if isinstance(e, TurnFinished)]
    assert len(fins) == 1, all_events
    return fins[0], all_events


def forcing(ids: list[int], start: int = 0):
    """A logits processor that forces ``ids`` from decode step ``start`` on (a real hook, not a mock)."""
    step = {"n": 0}

    def proc(tokens, logits):
        i = step["n"]
        step["n"] += 1
        if start <= i < start + len(ids):
            want = ids[i - start]
            return mx.where(mx.arange(logits.shape[-1]) == want, 0.0, -1e9)[None].astype(logits.dtype)
        return logits

    return proc


def fresh_greedy(model, prompt: list[int], max_tokens: int, eos: set[int]) -> list[int]:
    out = []
    for tok, _ in generate_step(mx.array(prompt), model, max_tokens=max_tokens, prompt_cache=model.make_cache()):
        out.append(tok)
        if tok in eos:
            break
    return out


def prompt_of(session: ChatSession, fin: TurnFinished) -> list[int]:
    """The prompt ids of the turn that just finished (transcript minus the reply's ids)."""
    n = len(fin.reply.tokens)
    return session.tokens[: len(session.tokens) - n]


def template_msgs(session: ChatSession) -> list[dict]:
    return [{"role": n.role, "content": n.raw} for n in session.active_path()]


def test_greedy_turns_equal_cacheless_generation_past_three_windows(tiny):
    model, tok = tiny
    window = model.args.sliding_window
    s = ChatSession(model, tok, temperature=0.0, max_tokens=12)
    eos = set(tok.eos_token_ids)
    for i, text in enumerate(PROMPTS):
        fin, _ = run(s.send(text))
        prompt = prompt_of(s, fin)
        assert list(fin.reply.tokens) == fresh_greedy(model, prompt, 12, eos)
        assert fin.stats.prompt_tokens + fin.stats.cached_tokens == len(prompt)
        if i > 0:
            assert fin.stats.cached_tokens > 0 and fin.stats.reconcile in ("append", "append_turn_end")
        assert kvcache.offset(s.cache) == len(s.tokens)
    assert len(s.tokens) > 3 * window
    assert any(c.offset > c.max_size for c in s.cache if isinstance(c, RotatingKVCache))

    # Next-token logits through the reused (wrapped) cache equal a fresh prefill of the same tokens.
    extra = tok.encode("<|im_start|>user\nhi", add_special_tokens=False)
    live = kvcache.restore(s.cache)
    reused = model(mx.array(extra)[None], cache=live)[0, -1]
    fresh = model(mx.array(s.tokens + extra)[None], cache=model.make_cache())[0, -1]
    assert mx.abs(reused - fresh).max().item() <= 1e-4


@pytest.mark.parametrize(
    "template,system",
    [
        (None, None),
        (None, "You are terse."),
        ("olmo31_instruct_lmstudio_community.jinja", None),
        ("olmo31_instruct_lmstudio_community.jinja", "Answer in French."),
        ("openinstruct_olmo.jinja", None),
        ("openinstruct_olmo.jinja", "Be brief."),
        ("openinstruct_olmo_thinker.jinja", None),
        ("openinstruct_olmo_thinker.jinja", "Think hard."),
        ("openinstruct_olmo_thinker_remove_intermediate_thinking.jinja", None),
    ],
)
def test_prompt_is_always_the_templates_rendering(tmp_path, template, system):
    """Every fed prompt is exactly the template's rendering of the history + new user turn; where the
    template re-renders the history verbatim, the cached transcript is a prefix of the next rendering."""
    import olmo3
    from olmo3.model.tiny import make_tiny_model

    text = real_template(template) if template else None
    folder = make_tiny_model(tmp_path / "m", chat_template_text=text, sliding_window=16)
    model, tok = olmo3.load(folder)
    s = ChatSession(model, tok, system_prompt=system, temperature=0.0, max_tokens=10)
    strips_reasoning = template and "remove_intermediate" in template
    close = tok.encode("</think>The answer.", add_special_tokens=False)
    for i, text in enumerate(PROMPTS[:4]):
        history = template_msgs(s)
        sys_msgs = [{"role": "system", "content": system}] if system else []
        if not strips_reasoning:
            expected_next = s.render(sys_msgs + history + [{"role": "user", "content": text}]).text
            assert expected_next.startswith(s._decode(s.tokens))
        fin, _ = run(s.send(text, logits_processors=[forcing(close, start=2)]))
        rendered = s.render(sys_msgs + history + [{"role": "user", "content": text}]).text
        assert s._decode(prompt_of(s, fin)) == rendered
        if s.messages[-1].reasoning is not None:
            assert rendered.endswith("<think>")
        if i > 0:
            expected = {"reprefill", "snapshot"} if strips_reasoning else {"append_turn_end", "append"}
            assert fin.stats.reconcile in expected
    # The default system prompt appears once, however many turns.
    assert s._decode(s.tokens).count("<|im_start|>system") == 1


def test_stop_on_endoftext_is_reconciled_not_fed_wrong(tiny, tmp_path):
    model, tok = tiny
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    s = ChatSession(model, tok, temperature=0.0, max_tokens=30)
    # Long enough that the sliding layers have wrapped: trimming is impossible, a snapshot must serve.
    for text in PROMPTS[:3]:
        run(s.send(text))
    fin, _ = run(s.send("stop with endoftext", logits_processors=[forcing([eot], start=3)]))
    assert fin.reply.tokens[-1] == eot and fin.stats.finish_reason == "stop"
    assert not kvcache.can_trim(s.cache)
    fin2, _ = run(s.send("follow-up"))
    assert fin2.stats.reconcile == "snapshot"
    rendered = s.render(template_msgs(s)[:-1], add_generation_prompt=True).text
    assert s._decode(prompt_of(s, fin2)) == rendered
    assert "<|endoftext|>" not in s._decode(prompt_of(s, fin2))

    # Before any ring buffer wraps (a wide window here), the same fix is a one-token trim.
    import olmo3
    from olmo3.model.tiny import make_tiny_model

    model, tok = olmo3.load(make_tiny_model(tmp_path / "wide", sliding_window=512))
    s2 = ChatSession(model, tok, temperature=0.0, max_tokens=8)
    run(s2.send("hi", logits_processors=[forcing([eot], start=1)]))
    assert kvcache.can_trim(s2.cache)
    fin3, _ = run(s2.send("again"))
    assert fin3.stats.reconcile == "trim"
    assert s2._decode(prompt_of(s2, fin3)) == s2.render(template_msgs(s2)[:-1]).text


def test_regenerate_and_edit_after_wrap_restore_snapshots_and_keep_branches(tiny):
    model, tok = tiny
    s = ChatSession(model, tok, temperature=0.0, max_tokens=12)
    for text in PROMPTS:
        last, _ = run(s.send(text))
    assert not kvcache.can_trim(s.cache)
    first_reply = s.messages[-1].content

    fin, _ = run(s.regenerate(sampling={"temperature": 1.0, "seed": 7}))
    assert fin.stats.reconcile == "snapshot"
    assert fin.stats.prompt_tokens == last.stats.prompt_tokens  # only the user turn was fed, as when sent
    assert s.branches(4)["reply"] == (1, 2)
    assert s._decode(prompt_of(s, fin)) == s.render(template_msgs(s)[:-1]).text
    s.switch_branch(4, 0)
    assert s.messages[-1].content == first_reply

    before = [m.content for m in s.messages]
    fin, _ = run(s.edit(3, "An edited question"))
    assert fin.stats.reconcile == "snapshot"
    assert s.branches(3)["user"] == (1, 2)
    assert s.messages[-2].content == "An edited question" and len(s.messages) == 8
    s.switch_branch(3, 0, which="user")
    assert [m.content for m in s.messages] == before  # nothing was erased


def test_same_seed_same_reply(tiny):
    model, tok = tiny
    s = ChatSession(model, tok, temperature=0.9, top_p=0.95, max_tokens=16)
    for text in PROMPTS[:2]:
        run(s.send(text))
    a, _ = run(s.regenerate(sampling={"seed": 1234}))
    b, _ = run(s.regenerate(sampling={"seed": 1234}))
    c, _ = run(s.regenerate(sampling={"seed": 99}))
    assert a.reply.tokens == b.reply.tokens
    assert a.reply.tokens != c.reply.tokens
    assert a.stats.seed == 1234


@pytest.mark.parametrize("wrapped", [False, True])
def test_snapshot_and_live_cache_never_see_each_others_writes(tiny, wrapped):
    model, _tok = tiny
    cache = model.make_cache()
    n = 40 if wrapped else 6
    model(mx.array(list(range(1, n + 1)))[None], cache=cache)
    mx.eval([c.state for c in cache])
    snap = kvcache.snapshot(cache)
    frozen = [(mx.array(c.keys), mx.array(c.values)) for c in snap]
    for t in range(3):  # live decode steps write into the shared buffers
        model(mx.array([[50 + t]]), cache=cache)
    mx.eval([c.state for c in cache])
    for c, (k, v) in zip(snap, frozen, strict=True):
        assert mx.array_equal(c.keys, k) and mx.array_equal(c.values, v)
    branch = kvcache.restore(snap)
    model(mx.array([[99]]), cache=branch)
    mx.eval([c.state for c in branch])
    for c, (k, v) in zip(snap, frozen, strict=True):
        assert mx.array_equal(c.keys, k) and mx.array_equal(c.values, v)
    assert kvcache.offset(cache) == n + 3 and kvcache.offset(branch) == n + 1 and kvcache.offset(snap) == n
    # The branch gives the same logits as a fresh run over its tokens.
    out = model(mx.array([[7]]), cache=branch)[0, -1]
    ref = model(mx.array([*list(range(1, n + 1)), 99, 7])[None])[0, -1]
    assert mx.abs(out - ref).max().item() <= 1e-4
    assert isinstance(cache[-1], KVCache)


def test_context_overflow_raises_with_numbers_and_drop_oldest_policy(tiny):
    model, tok = tiny
    s = ChatSession(model, tok, temperature=0.0, max_tokens=10)
    for text in PROMPTS[:3]:
        run(s.send(text))
    limit = s.context_limit = len(s.tokens) + 30
    big = "this question does not fit in the window " * 2
    state_before = s.to_state()
    with pytest.raises(ContextOverflowError) as e:
        run(s.send(big))
    err = e.value
    assert err.used + err.max_tokens > err.limit == limit and err.droppable_turns == 3
    assert err.new_tokens == len(tok.encode(big, add_special_tokens=False))
    assert s.to_state() == state_before  # nothing changed
    fin, _ = run(s.send(big, overflow="drop_oldest"))
    assert fin.stats.dropped_turns >= 1 and fin.stats.reconcile == "reprefill"
    assert "Hello! Tell me" not in s._decode(s.tokens)  # the oldest turn left the prompt...
    assert s.messages[0].content == PROMPTS[0] and not s.messages[0].in_context  # ...not the chat
    assert "<|im_start|>system" in s._decode(s.tokens)  # the system prompt stays


def test_cancel_during_prefill_and_during_decode(tiny):
    model, tok = tiny
    s = ChatSession(model, tok, temperature=0.0, max_tokens=50, prefill_step_size=8)
    run(s.send(PROMPTS[0]))
    messages_before = s.messages
    seen = {"n": 0}

    def stop_after_two_chunks():
        return seen["n"] >= 2

    events = []
    for ev in s.send("a long message " * 20, should_stop=stop_after_two_chunks):
        events.append(ev)
        if isinstance(ev, PrefillProgress) and ev.done:
            seen["n"] += 1
    fin = events[-1]
    assert isinstance(fin, TurnFinished) and fin.stats.finish_reason == "cancelled" and not fin.reply
    assert s.messages == messages_before
    assert kvcache.offset(s.cache) == len(s.tokens)

    count = {"n": 0}

    def stop_after_tokens():
        count["n"] += 1
        return count["n"] > 8

    fin, _ = run(s.send("tell me more", should_stop=stop_after_tokens))
    assert fin.stats.finish_reason == "cancelled" and 0 < fin.stats.generated_tokens < 50
    assert s.messages[-1].finish_reason == "cancelled"
    fin2, _ = run(s.send("go on"))
    assert fin2.stats.reconcile == "append_turn_end"
    assert s._decode(prompt_of(s, fin2)) == s.render(template_msgs(s)[:-1]).text


def test_think_streams_reasoning_then_answer(tiny_think):
    model, tok = tiny_think
    s = ChatSession(model, tok, temperature=0.0, max_tokens=20)
    assert True
    forced = tok.encode("Let me see</think>The answer is 12.", add_special_tokens=False)
    _fin, events = run(s.send("What is 4*3?", logits_processors=[forcing(forced)]))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    reasoning = "".join(d.text for d in deltas if d.channel == "reasoning")
    answer = "".join(d.text for d in deltas if d.channel == "answer")
    assert reasoning.startswith("Let me see") and "</think>" not in reasoning + answer
    assert answer.startswith("The answer is 12.")
    msg = s.messages[-1]
    assert msg.reasoning.startswith("Let me see") and msg.content.startswith("The answer is 12.")
    # Re-rendering the stored turn reproduces the cached tokens: the follow-up is a pure append.
    fin2, _ = run(s.send("And 5*5?"))
    assert fin2.stats.reconcile in ("append", "append_turn_end") and fin2.stats.cached_tokens > 0


def test_think_defaults_follow_olmo3_recommendation(tiny_think):
    model, tok = tiny_think
    s = ChatSession(model, tok)
    assert (s.sampling.temperature, s.sampling.top_p, s.sampling.top_k) == (0.6, 0.95, 50)


def test_state_round_trip_continues_token_exactly(tiny):
    model, tok = tiny
    s = ChatSession(model, tok, temperature=0.0, max_tokens=8)
    for text in PROMPTS[:2]:
        run(s.send(text))
    s2 = ChatSession(model, tok, temperature=0.0, max_tokens=8)
    s2.load_state(s.to_state())
    assert s2.messages == s.messages and s2.tokens == s.tokens
    a, _ = run(s.send("next"))
    b, _ = run(s2.send("next"))
    assert a.reply.tokens == b.reply.tokens
    assert b.stats.reconcile == "reprefill" and prompt_of(s, a) == prompt_of(s2, b)


def test_bad_input_is_rejected_clearly(tiny):
    model, tok = tiny
    s = ChatSession(model, tok)
    with pytest.raises(ValueError, match="empty"):
        s.send("   ")
    with pytest.raises(ValueError, match="nothing to regenerate"):
        s.regenerate()
    with pytest.raises(IndexError, match="user turn 3"):
        s.edit(3, "x")
    with pytest.raises(ValueError, match="top_p"):
        ChatSession(model, tok, top_p=0)
    with pytest.raises(ValueError, match="unknown sampling"):
        ChatSession(model, tok, temprature=1.0)


def test_kv_bytes_stay_at_the_hybrid_bound(tiny):
    model, tok = tiny
    s = ChatSession(model, tok, temperature=0.0, max_tokens=12)
    for text in PROMPTS:
        run(s.send(text))
    info = s.info
    bound = info.kv_bytes(len(s.tokens))
    assert bound <= s.kv_bytes() <= 1.05 * bound


def test_8bit_kv_for_full_layers_stays_close_and_keeps_working(tmp_path):
    from mlx_lm.models.cache import QuantizedKVCache

    import olmo3
    from olmo3.model.tiny import make_tiny_model

    # head_dim 32 (MLX quantizes in groups of 32 or more; real Olmo-3 has 128).
    model, tok = olmo3.load(
        make_tiny_model(tmp_path / "m", num_attention_heads=2, num_key_value_heads=1, sliding_window=16)
    )
    s = ChatSession(model, tok, temperature=0.0, max_tokens=10, kv_bits=8)
    for text in PROMPTS:
        run(s.send(text))
    assert any(isinstance(c, QuantizedKVCache) for c in s.cache)
    assert all(not isinstance(c, QuantizedKVCache) for c in s.cache if c is not s.cache[-1])
    fin, _ = run(s.regenerate())
    assert fin.stats.reconcile == "snapshot"
    extra = tok.encode("<|im_start|>user\nhi", add_special_tokens=False)
    quant = model(mx.array(extra)[None], cache=kvcache.restore(s.cache))[0, -1]
    exact = model(mx.array(s.tokens + extra)[None])[0, -1]
    assert mx.abs(quant - exact).max().item() < 0.05


def test_state_from_messages_rebuilds_a_tree_that_continues(tiny):
    from olmo3.chat.transcript import HistoryMessage as M
    from olmo3.chat.transcript import state_from_messages

    model, tok = tiny
    msgs = [
        M(id="u1", role="user", content="first", parent_id=None, active=True),
        M(id="a1", role="assistant", content="one", parent_id="u1", active=False),
        M(id="a2", role="assistant", content="uno", parent_id="u1", active=True),
        M(id="u2", role="user", content="second", parent_id="a2", active=True),
        M(id="a3", role="assistant", content="two", parent_id="u2", active=True),
    ]
    s = ChatSession(model, tok, temperature=0.0, max_tokens=5)
    s.load_state(state_from_messages(msgs, system_prompt="Be kind.", think=False))
    assert [m.content for m in s.messages] == ["first", "uno", "second", "two"]
    assert s.branches(0)["reply"] == (1, 2)
    fin, _ = run(s.send("third"))
    assert (
        fin.stats.reconcile == "fresh"
        and s._decode(prompt_of(s, fin))
        == s.render([{"role": "system", "content": "Be kind."}, *template_msgs(s)[:-1]]).text
    )


def test_instruct_sampling_comes_from_generation_config(tmp_path, tiny_model_dir):
    import json
    import shutil

    from olmo3.chat.sampling import INSTRUCT_DEFAULTS, THINK_DEFAULTS, Sampling, recommended

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "generation_config.json").write_text(json.dumps({"temperature": 0.3, "top_p": 0.8, "top_k": "x"}))
    rec = recommended(folder, think=False)
    assert (rec.temperature, rec.top_p, rec.top_k) == (0.3, 0.8, INSTRUCT_DEFAULTS.top_k)
    assert recommended(folder, think=True) == THINK_DEFAULTS
    assert recommended(tmp_path / "missing", think=False) == INSTRUCT_DEFAULTS
    assert Sampling.from_dict({"temperature": "hot", "max_tokens": "12"}).max_tokens == 12


def test_memory_budget_is_checked_before_prefill(tiny):
    model, tok = tiny
    s = ChatSession(model, tok, temperature=0.0, max_tokens=10, kv_budget_bytes=30_000)
    with pytest.raises(ContextOverflowError) as e:
        run(s.send("hello " * 40))
    assert e.value.reason == "memory" and "memory budget" in str(e.value)
    limit = e.value.limit
    assert s.info.kv_bytes(limit) <= 30_000 < s.info.kv_bytes(limit + 1) and not s.messages


def test_a_failure_mid_turn_never_leaves_a_wrong_cache(tiny):
    model, tok = tiny
    s = ChatSession(model, tok, temperature=0.0, max_tokens=10)
    run(s.send(PROMPTS[0]))
    before = (list(s.tokens), s.messages)

    def explode(tokens, logits):
        raise RuntimeError("device lost")

    with pytest.raises(RuntimeError, match="device lost"):
        run(s.send("boom", logits_processors=[explode]))
    assert s.cache is None and (s.tokens, s.messages) == before
    abandoned = s.send("abandoned")
    next(abandoned)
    abandoned.close()  # a consumer that stops iterating mid-turn
    assert s.cache is None and s.messages == before[1]
    fin, _ = run(s.send("works again"))
    assert fin.stats.reconcile == "snapshot"  # the turn-boundary snapshot served
    assert s._decode(prompt_of(s, fin)) == s.render(template_msgs(s)[:-1]).text
