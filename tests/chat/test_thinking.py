"""Think turns under control: a reasoning budget closed the template's way, earlier reasoning kept or dropped
(both real Ai2 thinker templates), and the provenance that reproduces a reply token for token."""

from __future__ import annotations

import json

import mlx.core as mx
import pytest
from conftest import real_template

from olmo3.chat import kvcache
from olmo3.chat.events import TextDelta, TurnFinished
from olmo3.chat.session import ChatSession
from olmo3.chat.thinking import BUDGET_CLOSE, strip_reasoning
from olmo3.chat.transcript import Provenance

THINKER = "openinstruct_olmo_thinker.jinja"
REMOVER = "openinstruct_olmo_thinker_remove_intermediate_thinking.jinja"


def run(events) -> tuple[TurnFinished, list]:
    all_events = list(events)
    fins = [e for e in all_events if isinstance(e, TurnFinished)]
    assert len(fins) == 1, all_events
    return fins[0], all_events


def _find(seq: list[int], sub: list[int]) -> int:
    for i in range(len(seq) - len(sub), -1, -1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


def thinker(tok, *, answer: str = "It is 12.", stop: bool = True, natural_close_after: int | None = None):
    """A logits processor that makes the tiny model reason forever (" step step …") and, once the reasoning is
    closed (by the engine, or by itself after ``natural_close_after`` steps), answer ``answer`` and stop."""
    step = tok.encode(" step", add_special_tokens=False)[0]
    close = tok.encode(BUDGET_CLOSE, add_special_tokens=False)
    natural = tok.encode("</think>", add_special_tokens=False)
    reply = tok.encode(answer, add_special_tokens=False) + ([tok.convert_tokens_to_ids("<|im_end|>")] if stop else [])
    calls = {"n": 0}

    def want(tokens) -> int:
        ids = tokens.tolist()
        end = max(
            (i + len(c) for c in (close, natural) if (i := _find(ids, c)) >= 0),
            default=-1,
        )
        if end < 0:
            if natural_close_after is not None and calls["n"] >= natural_close_after:
                n = calls["n"] - natural_close_after
                return natural[n] if n < len(natural) else step
            return step
        n = len(ids) - end
        return reply[n] if n < len(reply) else (reply[-1] if stop else step)

    def proc(tokens, logits):
        target = want(tokens)
        calls["n"] += 1
        return mx.where(mx.arange(logits.shape[-1]) == target, 0.0, -1e9)[None].astype(logits.dtype)

    return proc


def prompt_of(session: ChatSession, fin: TurnFinished) -> list[int]:
    return session.tokens[: len(session.tokens) - len(fin.reply.tokens)]


def template_msgs(session: ChatSession, *, strip: bool = False) -> list[dict]:
    return [
        {"role": n.role, "content": strip_reasoning(n.raw) if strip and n.role == "assistant" else n.raw}
        for n in session.active_path()
    ]


@pytest.mark.parametrize("budget", [24, 40])
def test_budget_closes_the_reasoning_and_the_answer_follows_token_exactly(tiny_think, budget):
    model, tok = tiny_think
    s = ChatSession(model, tok, temperature=0.8, max_tokens=12)
    fin, events = run(s.send("What is 4*3?", sampling={"thinking_budget": budget}, logits_processors=[thinker(tok)]))
    st = fin.stats
    assert st.reasoning_stopped and st.thinking_budget == budget
    assert st.reasoning_tokens <= budget and st.reasoning_tokens >= budget - 1
    assert st.finish_reason == "stop" and st.answer_tokens > 0
    assert st.reasoning_tokens + st.answer_tokens == st.generated_tokens == len(fin.reply.tokens)
    # The forced close sits in the reply's tokens, right where the reasoning stopped.
    close = tok.encode(BUDGET_CLOSE, add_special_tokens=False)
    at = _find(list(fin.reply.tokens), close)
    assert 0 < at < st.reasoning_tokens
    deltas = [e for e in events if isinstance(e, TextDelta)]
    answer = "".join(d.text for d in deltas if d.channel == "answer")
    assert answer == "It is 12." == fin.reply.content and "</think>" not in answer
    assert fin.reply.reasoning.startswith(" step step") and "</think>" not in fin.reply.reasoning
    assert kvcache.offset(s.cache) == len(s.tokens)

    # A follow-up re-renders the history (forced close included) to exactly the cached tokens: a pure append.
    before = list(s.tokens)
    fin2, _ = run(s.send("And 5*5?", logits_processors=[thinker(tok)]))
    assert fin2.stats.reconcile == "append" and fin2.stats.cached_tokens == len(before)
    assert s.tokens[: len(before)] == before
    assert s._decode(prompt_of(s, fin2)) == s.render(template_msgs(s)[:-1]).text
    # Regenerate restores the turn-boundary snapshot and keeps the budget.
    fin3, _ = run(s.regenerate(sampling={"thinking_budget": budget}, logits_processors=[thinker(tok)]))
    assert fin3.stats.reconcile == "snapshot" and fin3.stats.reasoning_tokens <= budget


def test_max_tokens_limits_the_answer_on_its_own(tiny_think):
    model, tok = tiny_think
    s = ChatSession(model, tok, temperature=0.0, max_tokens=10, thinking_budget=30)
    fin, _ = run(s.send("Go on forever", logits_processors=[thinker(tok, stop=False)]))
    st = fin.stats
    assert st.reasoning_stopped and st.reasoning_tokens <= 30
    assert st.answer_tokens == 10 and st.finish_reason == "length"
    assert st.generated_tokens == st.reasoning_tokens + 10 > 10  # the reasoning did not eat the answer's tokens
    # Without a budget, max tokens limits the whole reply, which here never leaves its reasoning.
    fin, _ = run(s.send("Again", sampling={"thinking_budget": None}, logits_processors=[thinker(tok, stop=False)]))
    assert fin.stats.generated_tokens == 10 and fin.stats.reasoning_tokens == 10 and fin.stats.answer_tokens == 0
    assert not fin.stats.reasoning_stopped and fin.reply.content == ""


def test_reasoning_that_ends_by_itself_is_not_stopped(tiny_think):
    model, tok = tiny_think
    s = ChatSession(model, tok, temperature=0.0, max_tokens=12, thinking_budget=64)
    fin, _ = run(s.send("Quick one", logits_processors=[thinker(tok, natural_close_after=5)]))
    st = fin.stats
    assert not st.reasoning_stopped and st.reasoning_tokens == 8 and st.answer_tokens > 0
    assert fin.reply.content == "It is 12." and BUDGET_CLOSE not in s._decode(list(fin.reply.tokens))


def test_a_budget_shorter_than_the_closing_tag_closes_at_once(tiny_think):
    model, tok = tiny_think
    s = ChatSession(model, tok, temperature=0.0, max_tokens=8)
    fin, _ = run(s.send("No thinking", sampling={"thinking_budget": 1}, logits_processors=[thinker(tok)]))
    close = tok.encode(BUDGET_CLOSE, add_special_tokens=False)
    assert list(fin.reply.tokens[: len(close)]) == close
    assert fin.stats.reasoning_stopped and fin.reply.content == "It is 12."
    assert kvcache.offset(s.cache) == len(s.tokens)
    fin2, _ = run(s.send("next", logits_processors=[thinker(tok)]))
    assert fin2.stats.reconcile == "append"


def test_budget_values_are_checked(tiny_think):
    model, tok = tiny_think
    s = ChatSession(model, tok)
    for bad in (0, -5, 2.5, "4K"):
        with pytest.raises(ValueError, match="thinking_budget"):
            s.send("hi", sampling={"thinking_budget": bad})
    assert not s.messages


@pytest.mark.parametrize("template", [THINKER, REMOVER])
@pytest.mark.parametrize("keep", [None, True, False])
def test_earlier_reasoning_kept_or_dropped_with_both_real_templates(tmp_path, template, keep):
    import olmo3
    from olmo3.model.tiny import make_tiny_model

    folder = make_tiny_model(tmp_path / "m", think=True, chat_template_text=real_template(template), sliding_window=16)
    model, tok = olmo3.load(folder)
    s = ChatSession(model, tok, temperature=0.0, max_tokens=10, thinking_budget=20)
    template_keeps = template == THINKER
    assert s.template_keeps_reasoning() is template_keeps
    effective = template_keeps if keep is None else keep
    opts = {"keep_reasoning": keep}
    fin1, _ = run(s.send("First question", sampling=opts, logits_processors=[thinker(tok)]))
    assert fin1.reply.reasoning and fin1.provenance.keep_reasoning is effective
    before = list(s.tokens)
    for text in ("Second question", "Third question"):
        fin, _ = run(s.send(text, sampling=opts, logits_processors=[thinker(tok)]))
        prompt = s._decode(prompt_of(s, fin))
        assert ("step step" in prompt.split("First question")[1]) is effective
        if effective:
            # Kept (even where the template drops it): the history renders to exactly the cached tokens.
            assert fin.stats.reconcile == "append" and fin.stats.cached_tokens == len(before)
            assert fin.stats.reasoning_dropped_tokens == 0
        else:
            expected = s.render(template_msgs(s, strip=True)[:-1]).text
            assert prompt == expected
            # The ring buffers have wrapped: the snapshot taken where the last reply began serves.
            assert not kvcache.can_trim(s.cache)
            assert fin.stats.reconcile == "snapshot" and fin.stats.cached_tokens > 0
            assert fin.stats.reasoning_dropped_tokens >= 20
        assert fin.provenance.keep_reasoning is effective
        before = list(s.tokens)
    assert s._decode(s.tokens).count("<|im_start|>system") == 1


def test_switching_to_drop_mid_conversation_frees_context(tiny_think):
    model, tok = tiny_think
    s = ChatSession(model, tok, temperature=0.0, max_tokens=10, thinking_budget=24)
    run(s.send("one", logits_processors=[thinker(tok)]))
    kept, _ = run(s.send("two", logits_processors=[thinker(tok)]))
    dropped, _ = run(s.regenerate(sampling={"keep_reasoning": False}, logits_processors=[thinker(tok)]))
    assert dropped.stats.reconcile in ("snapshot", "reprefill")
    assert dropped.stats.reasoning_dropped_tokens == kept.stats.reasoning_dropped_tokens + 24
    assert (
        dropped.stats.prompt_tokens + dropped.stats.cached_tokens < kept.stats.prompt_tokens + kept.stats.cached_tokens
    )


def test_provenance_reproduces_a_random_seed_reply_token_for_token(tiny_think):
    model, tok = tiny_think
    s = ChatSession(model, tok, temperature=1.0, top_p=0.9, top_k=0, max_tokens=24, thinking_budget=12)
    run(s.send("Tell me something."))
    fin, _ = run(s.send("And something else?"))
    p = fin.provenance
    assert p is not None and p.seed_was_random and p.seed == fin.stats.seed == p.sampling.seed
    assert p.sampling.temperature == 1.0 and p.sampling.top_p == 0.9 and p.thinking_budget == 12
    assert p.model_fingerprint == s.info.fingerprint and p.template_hash == s.template_hash()
    assert p.reconcile == fin.stats.reconcile and p.kv_bits is None and p.context_limit == s.context_limit
    import olmo3

    assert p.engine_version == olmo3.__version__
    # The JSON the store and the CLI carry reads back to the same provenance.
    assert Provenance.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    # Reproduce: regenerate with exactly those settings.
    again, _ = run(s.regenerate(sampling=p.reproduce_sampling()))
    assert again.reply.tokens == fin.reply.tokens and again.reply.content == fin.reply.content
    assert not again.provenance.seed_was_random and again.provenance.seed == p.seed
    other, _ = run(s.regenerate(sampling={**p.reproduce_sampling(), "seed": p.seed + 1}))
    assert other.reply.tokens != fin.reply.tokens
    # Saved with the engine state, it survives a reload.
    state = s.to_state()
    node = state.node(fin.reply.id)
    assert node is not None and node.provenance == p


def test_provenance_names_the_models_origin(tmp_path):
    import olmo3
    from olmo3.model.tiny import make_tiny_model

    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = tmp_path / "models--allenai--Olmo-3-7B-Think" / "snapshots" / commit
    # head_dim 32: the full-attention layers quantize (MLX needs groups of 32 or more).
    make_tiny_model(folder, think=True, num_attention_heads=2, num_key_value_heads=1)
    model, tok = olmo3.load(folder)
    s = ChatSession(model, tok, temperature=0.0, max_tokens=4, kv_bits=8)
    fin, _ = run(s.send("hi", sampling={"seed": 5}))
    p = fin.provenance
    assert (p.model_repo_id, p.model_revision) == ("allenai/Olmo-3-7B-Think", commit)
    assert p.kv_bits == 8 and p.seed == 5 and not p.seed_was_random
