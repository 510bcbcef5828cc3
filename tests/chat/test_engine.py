"""Engine: one MLX thread, job queue, events, cancel, memory budget, spill to disk and restore."""

from __future__ import annotations

import json
import threading
import time

import pytest

from olmo3.chat.engine import Engine
from olmo3.chat.events import (
    CacheState,
    ContextOverflow,
    ConversationOpened,
    JobCancelled,
    JobFailed,
    ModelLoaded,
    PrefillProgress,
    TextDelta,
    TurnFinished,
)
from olmo3.chat.transcript import TranscriptState


class Recorder:
    """Collects events and the thread each arrived on."""

    def __init__(self):
        self.events = []
        self.threads = set()
        self.lock = threading.Lock()

    def __call__(self, event):
        with self.lock:
            self.events.append(event)
            self.threads.add(threading.current_thread().name)

    def of(self, kind, job_id=None):
        with self.lock:
            return [e for e in self.events if isinstance(e, kind) and (job_id is None or e.job_id == job_id)]


@pytest.fixture
def engine(tmp_path, tiny_model_dir):
    rec = Recorder()
    eng = Engine(rec, cache_dir=tmp_path / "kv", session_options={"temperature": 0.0, "max_tokens": 12})
    eng.start()
    assert eng.wait(eng.load_model(tiny_model_dir), 60)
    eng.rec = rec
    yield eng
    assert eng.shutdown(30)
    assert not eng.running


def turn(eng, job_id) -> TurnFinished:
    assert eng.wait(job_id, 60)
    fails = eng.rec.of(JobFailed, job_id)
    assert not fails, fails
    fin = eng.rec.of(TurnFinished, job_id)
    assert len(fin) == 1
    return fin[0]


def test_events_arrive_in_order_on_the_engine_thread(engine):
    assert engine.rec.of(ModelLoaded)[0].info.num_layers == 4
    engine.wait(engine.open_conversation("c1"), 10)
    job = engine.send("c1", "Hello there")
    fin = turn(engine, job)
    kinds = [type(e).__name__ for e in engine.rec.events if e.job_id == job]
    assert kinds[0] == "JobStarted" and kinds[1] == "PrefillProgress"
    assert "TextDelta" in kinds and kinds.index("TurnFinished") > kinds.index("TextDelta")
    assert engine.rec.threads == {"olmo3-engine"}
    assert fin.conv_id == "c1" and fin.stats.generated_tokens == 12
    assert "".join(e.text for e in engine.rec.of(TextDelta, job)) == fin.reply.content


def test_follow_up_after_restart_reuses_the_cache_from_disk(tmp_path, tiny_model_dir):
    rec = Recorder()
    eng = Engine(rec, cache_dir=tmp_path / "kv", session_options={"temperature": 0.0, "max_tokens": 8})
    eng.start()
    eng.load_model(tiny_model_dir)
    eng.open_conversation("c1")
    eng.rec = rec
    for text in ("one", "two", "three"):
        fin = turn(eng, eng.send("c1", text))
    # The state goes through JSON, as it does through the store.
    state = TranscriptState.from_json(json.loads(json.dumps(fin.state.to_json())))
    assert state == fin.state
    assert eng.shutdown(30)
    assert (tmp_path / "kv" / "c1.safetensors").exists()

    rec2 = Recorder()
    eng2 = Engine(rec2, cache_dir=tmp_path / "kv", session_options={"temperature": 0.0, "max_tokens": 8})
    eng2.start()
    eng2.rec = rec2
    eng2.load_model(tiny_model_dir)
    assert eng2.wait(eng2.open_conversation("c1", state=state), 30)
    assert rec2.of(ConversationOpened)[0].cache_state == "disk"
    fin2 = turn(eng2, eng2.send("c1", "four"))
    assert fin2.stats.reconcile == "restored"
    assert fin2.stats.cached_tokens == len(state.tokens)
    assert eng2.shutdown(30)


def test_corrupt_or_mismatched_cache_file_is_discarded_and_reprefilled(tmp_path, tiny_model_dir, caplog):
    rec = Recorder()
    eng = Engine(rec, cache_dir=tmp_path / "kv", session_options={"temperature": 0.0, "max_tokens": 8})
    eng.rec = rec
    eng.start()
    eng.load_model(tiny_model_dir)
    eng.open_conversation("c1")
    fin = turn(eng, eng.send("c1", "one"))
    eng.wait(eng.spill_all(), 30)
    path = tmp_path / "kv" / "c1.safetensors"
    path.write_bytes(b"\x00garbage" * 10)
    fin2 = turn(eng, eng.send("c1", "two"))
    assert fin2.stats.reconcile == "reprefill" and fin2.stats.cached_tokens == 0
    assert "discarding cache file" in caplog.text
    # A state from another transcript: the saved cache must not be used.
    eng.wait(eng.spill_all(), 30)
    other = fin.state
    eng.wait(eng.open_conversation("c1", state=other), 30)
    fin3 = turn(eng, eng.send("c1", "three"))
    assert fin3.stats.reconcile == "reprefill"
    assert eng.shutdown(30)


def test_memory_budget_spills_least_recently_used_conversations(tmp_path, tiny_model_dir):
    rec = Recorder()
    eng = Engine(rec, cache_dir=tmp_path / "kv", session_options={"temperature": 0.0, "max_tokens": 12})
    eng.rec = rec
    eng.start()
    eng.load_model(tiny_model_dir)

    def pool(e):
        pool.result = {cid: (s.cache is not None, s.kv_bytes(True)) for cid, s in e.sessions.items()}

    for cid in ("a", "b", "c"):
        eng.open_conversation(cid)
        turn(eng, eng.send(cid, "Hello, tell me about caches please"))
        if cid == "a":  # a budget for one and a half conversations of this size (with their snapshots)
            eng.wait(eng.call(pool), 10)
            budget = int(pool.result["a"][1] * 1.5)
            eng.wait(eng.set_memory_budget(budget), 10)

    eng.wait(eng.call(pool), 10)
    total = sum(b for _, b in pool.result.values())
    assert total <= budget
    assert pool.result["c"][0]  # the conversation just used stays warm
    assert not pool.result["a"][0]  # the least recently used was spilled
    assert any(e.conv_id == "a" and e.state == "disk" for e in rec.of(CacheState))
    fin = turn(eng, eng.send("a", "and again"))
    assert fin.stats.reconcile == "restored"
    assert eng.shutdown(30)


def test_cancel_stops_generation_and_queued_jobs(engine):
    engine.wait(engine.open_conversation("c1", sampling={"max_tokens": 2000}), 10)
    job = engine.send("c1", "write a long story")
    queued = engine.send("c1", "queued message")
    deadline = time.monotonic() + 30
    while not engine.rec.of(TextDelta, job) and time.monotonic() < deadline:
        time.sleep(0.005)
    engine.cancel()
    assert engine.wait(queued, 30)
    fin = engine.rec.of(TurnFinished, job)[0]
    assert fin.stats.finish_reason == "cancelled" and fin.stats.generated_tokens < 2000
    assert engine.rec.of(JobCancelled, queued)
    # The engine keeps working after a cancel.
    engine.wait(engine.open_conversation("c1", sampling={"max_tokens": 5}), 10)
    fin2 = turn(engine, engine.send("c1", "short one"))
    assert fin2.stats.finish_reason == "length"


def test_errors_become_events_and_the_thread_survives(engine, tmp_path):
    job = engine.send("nope", "hello")
    engine.wait(job, 10)
    assert "not open" in engine.rec.of(JobFailed, job)[0].message
    bad = tmp_path / "empty"
    bad.mkdir()
    job = engine.load_model(bad)
    engine.wait(job, 10)
    assert "config.json is missing" in engine.rec.of(JobFailed, job)[0].message
    with pytest.raises(ValueError, match="bad conversation id"):
        engine.send("../etc", "x")
    engine.wait(engine.open_conversation("ok"), 10)
    turn(engine, engine.send("ok", "still alive?"))


def test_context_overflow_is_an_event_and_drop_oldest_resends(engine):
    engine.wait(engine.open_conversation("c1", sampling={"max_tokens": 4000}), 10)
    job = engine.send("c1", "word " * 4000)  # leaves no room for even a short reply (max_tokens is only a cap)
    engine.wait(job, 10)
    ov = engine.rec.of(ContextOverflow, job)[0]
    assert ov.limit == 4096 and ov.max_tokens == 256 and ov.used + 256 > 4096  # max_tokens: the minimal reply
    assert not engine.rec.of(TurnFinished, job)


def test_no_model_loaded_is_a_clear_failure(tmp_path):
    rec = Recorder()
    eng = Engine(rec, cache_dir=tmp_path / "kv")
    eng.start()
    job = eng.open_conversation("c1")
    eng.wait(job, 10)
    assert "no model is loaded" in rec.of(JobFailed, job)[0].message
    assert eng.shutdown(10)


def test_prefill_progress_is_reported(engine):
    engine.wait(engine.open_conversation("c1"), 10)
    job = engine.send("c1", "a fairly long message " * 30)
    turn(engine, job)
    progress = engine.rec.of(PrefillProgress, job)
    assert progress[0].done == 0 and progress[-1].done >= progress[-1].total - 1


def test_orphan_caches_are_removed(tmp_path):
    eng = Engine(cache_dir=tmp_path / "kv")
    (tmp_path / "kv").mkdir()
    for name in ("alive", "purged", "half.tmp"):
        (tmp_path / "kv" / f"{name}.safetensors").write_bytes(b"x" * 10)
    assert eng.remove_orphan_caches({"alive"}) == 20
    assert [p.name for p in (tmp_path / "kv").iterdir()] == ["alive.safetensors"]
