"""8-bit KV as a setting: the engine switches it for every conversation, and the bench measures what it costs."""

from __future__ import annotations

import pytest
from mlx_lm.models.cache import QuantizedKVCache

from olmo3.chat.engine import Engine
from olmo3.chat.events import JobFailed, TurnFinished


class Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)


def turn(eng, job_id) -> TurnFinished:
    assert eng.wait(job_id, 60)
    assert not [e for e in eng.on_event.events if isinstance(e, JobFailed) and e.job_id == job_id]
    (fin,) = [e for e in eng.on_event.events if isinstance(e, TurnFinished) and e.job_id == job_id]
    return fin


@pytest.fixture(scope="module")
def quantizable_dir(tmp_path_factory):
    from olmo3.model.tiny import make_tiny_model

    # head_dim 32 (MLX quantizes keys/values in groups of 32 or more; Olmo-3 has 128).
    return make_tiny_model(
        tmp_path_factory.mktemp("m") / "q", num_attention_heads=2, num_key_value_heads=1, sliding_window=16
    )


def test_engine_turns_8bit_kv_on_and_off_for_open_conversations(tmp_path, quantizable_dir):
    eng = Engine(Recorder(), cache_dir=tmp_path / "kv", session_options={"temperature": 0.0, "max_tokens": 8})
    eng.start()
    try:
        assert eng.wait(eng.load_model(quantizable_dir), 60)
        eng.wait(eng.open_conversation("c1"))
        first = turn(eng, eng.send("c1", "hello there"))
        assert first.provenance.kv_bits is None
        full_bytes = eng.sessions["c1"].kv_bytes()
        eng.wait(eng.set_kv_bits(8))
        second = turn(eng, eng.send("c1", "and again"))
        s = eng.sessions["c1"]
        assert second.provenance.kv_bits == 8 and s.kv_bits == 8
        assert any(isinstance(c, QuantizedKVCache) for c in s.cache)
        assert s.kv_bytes() < s.info.kv_bytes(len(s.tokens))  # below what the model's own precision would take
        assert full_bytes < s.info.kv_bytes(len(s.tokens))
        eng.wait(eng.set_kv_bits(None))
        third = turn(eng, eng.send("c1", "one more"))
        assert third.provenance.kv_bits is None and third.stats.reconcile in ("append", "append_turn_end")
        # A conversation opened later gets the engine's setting too.
        eng.wait(eng.set_kv_bits(8))
        eng.wait(eng.open_conversation("c2"))
        assert eng.sessions["c2"].kv_bits == 8
    finally:
        assert eng.shutdown(30)


def test_kv_quality_past_four_windows(quantizable_dir):
    import olmo3
    from olmo3.cli.bench import kv_quality

    model, tok = olmo3.load(quantizable_dir)
    q = kv_quality(model, tok, bits=8, extra_tokens=16)
    assert q["history_windows"] >= 4 and q["positions"] > 16
    assert q["kv_bytes_quantized"] < q["kv_bytes_full_precision"]
    assert 0 < q["max_abs_dlogit"] < 0.05 * max(q["logit_std"], 1.0)
    assert q["max_abs_dlogit_reprefill"] < q["max_abs_dlogit"]  # float32 here: quantization, not chunking, shows
