"""Engine.complete on a real engine thread: which conversation a stateless request continues, forks, the disk tier,
per-job listeners and cancels; and the small MLX-free pieces (stop strings, conversation keys)."""

from __future__ import annotations

import threading

import pytest

from olmo3.chat.completion import (
    ChatMessage,
    CompletionFinished,
    CompletionRejected,
    CompletionRequest,
    StopMatcher,
)
from olmo3.chat.engine import Engine
from olmo3.chat.events import Event, JobCancelled, TextDelta


class Listener:
    def __init__(self):
        self.events: list[Event] = []
        self.done = threading.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    @property
    def finished(self) -> CompletionFinished:
        fin = [e for e in self.events if isinstance(e, CompletionFinished)]
        assert len(fin) == 1, self.events
        return fin[0]


@pytest.fixture
def engine(tmp_path, tiny_model_dir):
    app_events: list[Event] = []
    eng = Engine(app_events.append, cache_dir=tmp_path / "kv")
    eng.start()
    assert eng.wait(eng.load_model(tiny_model_dir), 60)
    eng.app_events = app_events
    yield eng
    assert eng.shutdown(30)


def chat(*pairs: tuple[str, str], max_tokens: int = 6, **kw) -> CompletionRequest:
    return CompletionRequest(
        messages=tuple(ChatMessage(r, c) for r, c in pairs),  # type: ignore[arg-type]
        sampling={"temperature": 0.0, "max_tokens": max_tokens},
        **kw,
    )


def run(eng: Engine, request: CompletionRequest) -> Listener:
    listener = Listener()
    assert eng.wait(eng.complete(request, listener), 60)
    return listener


def test_follow_ups_and_edits_stay_in_their_conversation_new_ones_fork(engine):
    first = run(engine, chat(("user", "Hello there, fox.")))
    conv = first.finished.conv_id
    assert conv.startswith("serve/") and first.finished.source == "none"
    follow = run(engine, chat(("user", "Hello there, fox."), ("assistant", first.text), ("user", "And then?")))
    assert follow.finished.conv_id == conv and follow.finished.source == "live"
    assert follow.finished.cached_tokens == first.finished.prompt_tokens + first.finished.completion_tokens
    # An edited second message: the same conversation, from the snapshot after turn 1.
    edit = run(engine, chat(("user", "Hello there, fox."), ("assistant", first.text), ("user", "Something else")))
    assert edit.finished.conv_id == conv and edit.finished.source == "snapshot"
    assert edit.finished.cached_tokens == follow.finished.cached_tokens
    # Another first message is another conversation: forked, the first one's live cache untouched.
    other = run(engine, chat(("user", "A different question")))
    assert other.finished.conv_id != conv
    again = run(engine, chat(("user", "Hello there, fox."), ("assistant", first.text), ("user", "Something else"),
                             ("assistant", edit.text), ("user", "More.")))  # fmt: skip
    assert again.finished.conv_id == conv and again.finished.source == "live"
    # None of it reached the app's listener.
    assert not [e for e in engine.app_events if e.conv_id.startswith("serve")]


def test_clients_that_start_alike_share_a_conversation_and_keep_their_branches_as_snapshots(engine):
    """Same first message, different replies (two clients sampling): one session; each follow-up restores its
    own branch's turn-end snapshot, so neither re-reads its history."""
    hello = ("user", "Hello, who are you?")
    a1 = run(engine, chat(hello, logit_bias={1: 100.0}))
    b1 = run(engine, chat(hello, logit_bias={2: 100.0}))
    assert a1.text != b1.text and a1.finished.conv_id == b1.finished.conv_id
    turns = {"a": (a1, [hello, ("assistant", a1.text)]), "b": (b1, [hello, ("assistant", b1.text)])}
    for i in range(2):
        for name in ("a", "b"):
            last, history = turns[name]
            nxt = run(engine, chat(*history, ("user", f"{name} {i}")))
            assert nxt.finished.cached_tokens == last.finished.prompt_tokens + last.finished.completion_tokens
            turns[name] = (nxt, [*history, ("user", f"{name} {i}"), ("assistant", nxt.text)])


def test_a_new_conversation_forks_from_a_shared_prefix_while_it_can_be_rewound(tmp_path, tiny_model_dir):
    # A window larger than the conversation: the first conversation's cache can still be trimmed to the shared
    # system prompt, so the second starts from a copy of it.
    from olmo3.model.tiny import make_tiny_model

    folder = make_tiny_model(tmp_path / "wide", sliding_window=512)
    eng = Engine(None, cache_dir=tmp_path / "kv")
    eng.start()
    try:
        assert eng.wait(eng.load_model(folder), 60)
        system = ("system", "You are a careful assistant who answers in one short sentence.")
        a = run(eng, chat(system, ("user", "First question")))
        b = run(eng, chat(system, ("user", "Second question")))
        assert b.finished.conv_id != a.finished.conv_id
        assert b.finished.source == "fork" and b.finished.cached_tokens > 10
        # The first conversation's own cache was not disturbed by the fork.
        a2 = run(eng, chat(system, ("user", "First question"), ("assistant", a.text), ("user", "Next")))
        assert a2.finished.conv_id == a.finished.conv_id and a2.finished.source == "live"
    finally:
        eng.shutdown()


def test_new_conversations_fork_from_the_system_prompt_checkpoint_after_the_window_wrapped(engine, tiny):
    # The tiny model's window is 16 tokens: this system prompt alone wraps it, so only the checkpoint taken at
    # its end (not a rewind) can give a new conversation its cache.
    system = ("system", "You are a careful assistant. " * 8)
    # Everything before the first user message's content: the system block and the user turn's header.
    block = tiny[1].apply_chat_template([{"role": "system", "content": system[1]}], tokenize=False)
    block += "<|im_start|>user\n"
    a = run(engine, chat(system, ("user", "First question")))
    b = run(engine, chat(system, ("user", "Another conversation entirely")))
    assert b.finished.conv_id != a.finished.conv_id and b.finished.source == "fork"
    assert b.finished.cached_tokens == len(tiny[1].encode(block, add_special_tokens=False)) > 16
    c = run(engine, chat(("system", "A different system prompt."), ("user", "First question")))
    assert c.finished.cached_tokens < 16
    # The template's default system prompt (no system message) is checkpointed the same way.
    d = run(engine, chat(("user", "One")))
    e = run(engine, chat(("user", "Two")))
    assert e.finished.source == "fork" and e.finished.cached_tokens > 16 and d.finished.source != "fork"


def test_raw_prompts_continue_only_what_they_extend(engine):
    raw = lambda p: CompletionRequest(prompt=p, sampling={"temperature": 0.0, "max_tokens": 5})  # noqa: E731
    a = run(engine, raw("Once upon a time there was a fox"))
    b = run(engine, raw("Once upon a time there was a fox" + a.text + " and then"))
    assert b.finished.conv_id == a.finished.conv_id and b.finished.cached_tokens > 0
    c = run(engine, raw("Something unrelated entirely"))
    assert c.finished.conv_id != a.finished.conv_id


def test_stop_strings_cut_the_reply_and_logit_bias_steers_it(engine):
    free = run(engine, chat(("user", "Say something.")))
    word = free.text[2:5]
    cut = run(engine, chat(("user", "Say something."), stop=(word,)))
    assert cut.text == free.text[: free.text.index(word)] and cut.finished.finish_reason == "stop"
    banned = run(engine, chat(("user", "Say something."), max_tokens=4, logit_bias={0: -100.0, 1: 100.0}))
    assert banned.finished.completion_tokens == 4


def test_rejections_no_model_and_bad_input(tmp_path):
    eng = Engine(None, cache_dir=tmp_path / "kv")
    eng.start()
    try:
        rejected = run(eng, chat(("user", "hi")))
        r = [e for e in rejected.events if isinstance(e, CompletionRejected)]
        assert r and r[0].status == 503 and r[0].code == "model_not_loaded"
    finally:
        eng.shutdown()


def test_cancel_job_stops_only_its_job_and_the_app_cancel_leaves_requests_alone(engine):
    long_request = chat(("user", "Go on."), max_tokens=3000, logit_bias={0: -100.0})
    gate = threading.Event()
    engine.call(lambda e: gate.wait(30))  # hold the engine so both requests queue behind it
    a, b = Listener(), Listener()
    ja = engine.complete(long_request, a)
    jb = engine.complete(chat(("user", "Short.")), b)
    engine.cancel()  # the app's Stop: not the server's requests
    engine.cancel_job(ja)
    gate.set()
    assert engine.wait(jb, 60) and engine.wait(ja, 60)
    assert any(isinstance(e, JobCancelled) for e in a.events)  # cancelled while it waited
    assert b.finished.finish_reason in ("stop", "length")


def test_the_disk_tier_is_kept_under_its_limit_and_left_alone_by_orphan_cleanup(tmp_path, tiny_model_dir):
    eng = Engine(None, cache_dir=tmp_path / "kv")
    eng.start()
    try:
        assert eng.wait(eng.load_model(tiny_model_dir), 60)
        for i in range(3):
            run(eng, chat(("user", f"Conversation number {i}")))
        assert eng.wait(eng.spill_all(), 60)
        serve_dir = tmp_path / "kv" / "serve"
        files = sorted(serve_dir.glob("*.safetensors"))
        assert len(files) == 3 and len(list(serve_dir.glob("*.json"))) == 3
        assert eng.remove_orphan_caches(keep=set()) == 0 and len(list(serve_dir.glob("*.safetensors"))) == 3
        limit = 2 * max(f.stat().st_size for f in files)
        eng._pool.disk_limit = limit  # room for about two: the next spill drops the oldest ones
        latest = run(eng, chat(("user", "Conversation number 2"), ("assistant", "x"), ("user", "y")))
        assert eng.wait(eng.spill_all(), 60)
        left = list(serve_dir.glob("*.safetensors"))
        assert len(left) < 3 and sum(f.stat().st_size for f in left) <= limit
        assert serve_dir / (latest.finished.conv_id.removeprefix("serve/") + ".safetensors") in left
        assert len(list(serve_dir.glob("*.json"))) == len(left)
    finally:
        eng.shutdown()


def test_stop_matcher_holds_back_what_could_start_a_stop_string():
    m = StopMatcher(["END", "\n\n"])
    assert m.feed("Hello E") == "Hello "
    assert m.feed("N") == ""
    assert m.feed("X and") == "ENX and"
    assert m.feed(" more\n") == " more"
    assert m.feed("\nrest") == "" and m.hit
    assert m.feed("ignored") == "" and m.flush() == ""
    m = StopMatcher([])
    assert m.feed("abc") == "abc" and m.flush() == ""
    m = StopMatcher(["xyz"])
    assert m.feed("ax") == "a" and m.flush() == "x"


def test_conversation_key_is_the_history_up_to_the_first_user_message():
    base = chat(("system", "S"), ("user", "U1"))
    follow = chat(("system", "S"), ("user", "U1"), ("assistant", "A"), ("user", "U2"))
    other_system = chat(("system", "T"), ("user", "U1"))
    assert base.conversation_key() == follow.conversation_key() != other_system.conversation_key()
    assert CompletionRequest(prompt="raw").conversation_key() is None
    with pytest.raises(ValueError):
        CompletionRequest()


def test_the_servers_fast_decode_equals_the_sessions(tiny):
    import random

    from olmo3.chat.serve_session import ServeSession
    from olmo3.chat.session import ChatSession

    model, tok = tiny
    serve, chat = ServeSession(model, tok, conv_key=None), ChatSession(model, tok)
    rng = random.Random(0)
    vocab = len(tok.get_vocab())
    for n in (0, 1, 7, 500):
        ids = [rng.randrange(vocab) for _ in range(n)]
        assert serve._decode(ids) == chat._decode(ids)
