"""Memory and context guards: the check before loading, a context per model, max tokens as a cap, finish "context".

Real tiny models (random weights, real tokenizer), the real engine thread, real budgets (a ``memory_limit`` is the
user's cap, so the guard is driven without pretending the machine has less RAM).
"""

from __future__ import annotations

import threading

import mlx.core as mx
import pytest

from olmo3 import fit, memory
from olmo3.chat.engine import Engine
from olmo3.chat.events import (
    ConversationOpened,
    JobFailed,
    ModelLoaded,
    ModelWontFit,
    TurnFinished,
)
from olmo3.chat.session import ChatSession, ContextOverflowError
from olmo3.hub.catalog import OLMO3_7B
from olmo3.memory import MemoryBudget
from olmo3.model.modelinfo import inspect_model_dir

MiB = 1024**2


@pytest.fixture(scope="module")
def ctx4k(tmp_path_factory):
    """A generated model with a 4,096-token context, as the issue describes."""
    from olmo3.model.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "ctx4k", max_position_embeddings=4096, seed=3)


@pytest.fixture(scope="module")
def ctx4k_loaded(ctx4k):
    import olmo3

    return olmo3.load(ctx4k)


def ban_stop(tok):
    banned = mx.array(list(tok.eos_token_ids))

    def proc(tokens, logits):
        return mx.put_along_axis(logits, banned[None], mx.array(-1e9, logits.dtype), axis=-1)

    return proc


def finished(events) -> TurnFinished:
    """Run a turn to its end (a consumer that stops early abandons the turn) and return its TurnFinished."""
    (fin,) = [e for e in list(events) if isinstance(e, TurnFinished)]
    return fin


class Recorder:
    def __init__(self):
        self.events, self.lock = [], threading.Lock()

    def __call__(self, event):
        with self.lock:
            self.events.append(event)

    def of(self, kind, job_id=None):
        with self.lock:
            return [e for e in self.events if isinstance(e, kind) and (job_id is None or e.job_id == job_id)]


# ------------------------------------------------------------------------------------------------ max tokens


def test_a_4096_context_model_with_default_settings_answers_hello(ctx4k_loaded):
    model, tok = ctx4k_loaded
    s = ChatSession(model, tok, seed=1)  # default sampling: the model's recommendation, max_tokens 4096
    assert s.sampling.max_tokens == 4096 == s.context_limit
    fin = [e for e in s.send("Hello") if isinstance(e, TurnFinished)]
    assert len(fin) == 1 and fin[0].reply is not None
    assert fin[0].stats.generated_tokens >= 1 and fin[0].stats.context_used <= 4096


def test_a_reply_that_fills_the_context_stops_with_finish_reason_context(ctx4k_loaded):
    model, tok = ctx4k_loaded
    s = ChatSession(model, tok, temperature=0.0, context_limit=300)  # max_tokens 4096: only a cap
    fin = finished(s.send("Hello", logits_processors=[ban_stop(tok)]))
    assert fin.stats.finish_reason == "context" and fin.reply.finish_reason == "context"
    assert len(s.tokens) == 300 == fin.stats.context_used
    assert fin.stats.generated_tokens == 300 - fin.stats.prompt_tokens
    # A cap below the room is still "length".
    s2 = ChatSession(model, tok, temperature=0.0, max_tokens=5, context_limit=300)
    fin2 = finished(s2.send("Hello", logits_processors=[ban_stop(tok)]))
    assert fin2.stats.finish_reason == "length" and fin2.stats.generated_tokens == 5


def test_refused_only_when_the_prompt_leaves_no_room_for_a_short_reply(ctx4k_loaded):
    model, tok = ctx4k_loaded
    probe = ChatSession(model, tok)
    prompt = len(probe._target(probe.render([{"role": "user", "content": "Hello"}], add_generation_prompt=True))[0])
    # Room for 1/8 of a 160-token context (20 tokens): answered, although max_tokens is 4096.
    roomy = ChatSession(model, tok, temperature=0.0, context_limit=prompt + 20)
    assert [e for e in roomy.send("Hello") if isinstance(e, TurnFinished)]
    tight = ChatSession(model, tok, temperature=0.0, context_limit=prompt + 5)
    with pytest.raises(ContextOverflowError) as e:
        tight.send("Hello")
    minimum = min(256, (prompt + 5) // 8)
    assert e.value.max_tokens == minimum and f"at least {minimum} for a reply" in str(e.value)
    assert not tight.messages


# ------------------------------------------------------------------------------------------- the fit check


def test_default_context_is_the_maximum_or_what_fits():
    shape = fit.ModelShape(
        OLMO3_7B.weight_bytes(4),
        OLMO3_7B.kv_bytes_per_token_full,
        OLMO3_7B.kv_bytes_per_token_sliding,
        OLMO3_7B.sliding_window,
        OLMO3_7B.max_position_embeddings,
    )
    roomy = MemoryBudget(48 * 1024**3, "given")
    assert fit.default_context(shape, roomy) == 65536
    small = MemoryBudget(12 * 1024**3, "given")  # a 16 GB Mac
    n = fit.default_context(shape, small)
    assert 8192 < n < 65536 and n % 1024 == 0
    assert shape.fit(n, small).verdict == "fits" and shape.fit(n + 4096, small).verdict != "fits"
    plan = fit.plan_load(shape, budget=small)
    assert plan.context_tokens == n and plan.fits
    assert fit.plan_load(shape, context_tokens=1_000_000, budget=roomy).context_tokens == 65536  # never above max
    tiny_budget = MemoryBudget(2 * 1024**3, "limit")
    with pytest.raises(fit.ModelWontFitError) as e:
        fit.plan_load(shape, budget=tiny_budget)
    assert "Won't fit" in str(e.value) and "your memory limit" in str(e.value)
    assert fit.plan_load(shape, budget=tiny_budget, force=True).fit.verdict == "wont_fit"


def test_memory_budget_cap_and_out_of_memory_messages():
    real = memory.memory_budget()
    capped = memory.memory_budget(100 * MiB)
    assert capped.bytes == 100 * MiB and capped.source == "limit" and "your memory limit" in capped.describe()
    assert memory.memory_budget(real.bytes * 2) == real  # a cap above the budget changes nothing
    metal = "[metal::malloc] Attempting to allocate 17179869184 bytes which is greater than the maximum allowed"
    for error in (MemoryError(), RuntimeError(metal), RuntimeError("Command buffer failed: Insufficient Memory")):
        text = memory.describe_error(error)
        assert text == memory.OUT_OF_MEMORY
    assert memory.OUT_OF_MEMORY.count(".") == 1 and "(" not in memory.OUT_OF_MEMORY  # one sentence, no parentheses
    for advice in ("smaller quantization", "shorter context", "close other conversations"):
        assert advice in memory.OUT_OF_MEMORY
    assert memory.describe_error(ValueError("the message is empty")) == "the message is empty"


# ------------------------------------------------------------------------------------------------ the engine


def test_the_engine_refuses_a_model_that_wont_fit_and_loads_it_when_forced(tmp_path, ctx4k, tiny_model_dir):
    info = inspect_model_dir(ctx4k)
    base = fit.ModelShape.of(info).fit(0, MemoryBudget(1 << 40, "given")).needed_bytes  # weights + runtime
    rec = Recorder()
    eng = Engine(rec, cache_dir=tmp_path / "kv", memory_limit_bytes=base + info.kv_bytes(1024))
    eng.start()
    try:
        # A context that fits under the cap loads; one that doesn't is refused with the numbers.
        ok = eng.load_model(ctx4k, context_tokens=1024)
        assert eng.wait(ok, 60) and rec.of(ModelLoaded, ok)[0].context_tokens == 1024
        refused = eng.load_model(tiny_model_dir, context_tokens=4096)
        assert eng.wait(refused, 60)
        (event,) = rec.of(ModelWontFit, refused)
        assert event.path == str(tiny_model_dir) and event.context_tokens == 4096
        assert event.needed_bytes > event.budget_bytes == base + info.kv_bytes(1024)
        assert "Won't fit" in event.message and "4,096 tokens" in event.message
        assert not rec.of(ModelLoaded, refused) and not rec.of(JobFailed, refused)
        assert eng.info.path == info.path  # the model that was loaded stays loaded
        # Load anyway.
        forced = eng.load_model(tiny_model_dir, context_tokens=4096, force=True)
        assert eng.wait(forced, 60) and rec.of(ModelLoaded, forced)[0].context_tokens == 4096
        # The default context under the cap: what fits.
        default = eng.load_model(ctx4k)
        assert eng.wait(default, 60)
        context = rec.of(ModelLoaded, default)[0].context_tokens
        assert 1024 <= context < 4096
        opened = eng.open_conversation("c1")
        assert eng.wait(opened, 10) and rec.of(ConversationOpened, opened)[0].context_limit == context
    finally:
        assert eng.shutdown(30)


def test_the_engine_answers_hello_with_a_4096_model_and_default_settings(tmp_path, ctx4k):
    rec = Recorder()
    eng = Engine(rec, cache_dir=tmp_path / "kv", session_options={"seed": 2})
    eng.start()
    try:
        assert eng.wait(eng.load_model(ctx4k), 60)
        assert rec.of(ModelLoaded)[0].context_tokens == 4096
        eng.wait(eng.open_conversation("c1"), 10)
        job = eng.send("c1", "Hello")
        assert eng.wait(job, 120)
        assert not rec.of(JobFailed, job)
        (fin,) = rec.of(TurnFinished, job)
        assert fin.reply is not None and fin.stats.context_limit == 4096
    finally:
        assert eng.shutdown(30)


def test_an_out_of_memory_error_says_what_to_do(tmp_path):
    rec = Recorder()
    eng = Engine(rec, cache_dir=tmp_path / "kv")
    eng.start()
    try:

        def allocate(_engine):
            raise RuntimeError("[METAL] Command buffer execution failed: Insufficient Memory (kIOGPUCommandBuffer)")

        job = eng.call(allocate)
        assert eng.wait(job, 10)
        (failed,) = rec.of(JobFailed, job)
        assert failed.message == memory.OUT_OF_MEMORY and failed.error == "RuntimeError"
    finally:
        assert eng.shutdown(30)
