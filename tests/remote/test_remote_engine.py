"""The remote engine against a real ``olmo3 serve`` subprocess: the local engine's events, the server's caches."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from remote_helpers import KEY, Canned
from serve_server import ServeProcess

from olmo3.chat import events as ev
from olmo3.remote.client import parse_address
from olmo3.remote.engine import RemoteEngine

GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_tokens": 8, "seed": 0}
LONG = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": 1800, "seed": 7}


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.cv = threading.Condition()

    def __call__(self, event: Any) -> None:
        with self.cv:
            self.events.append(event)
            self.cv.notify_all()

    def of(self, job: int, kind: type | None = None) -> list[Any]:
        with self.cv:
            return [e for e in self.events if e.job_id == job and (kind is None or isinstance(e, kind))]

    def wait_for(self, job: int, kind: type, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        with self.cv:
            while not (found := [e for e in self.events if e.job_id == job and isinstance(e, kind)]):
                left = deadline - time.monotonic()
                assert left > 0, f"no {kind.__name__} for job {job}: {self.events[-5:]}"
                self.cv.wait(left)
            return found[0]


def engine_for(url: str, key: str | None = KEY) -> tuple[RemoteEngine, Recorder]:
    rec = Recorder()
    engine = RemoteEngine(rec, parse_address(url), key)
    engine.start()
    return engine, rec


def connect(url: str, key: str | None = KEY) -> tuple[RemoteEngine, Recorder, Any]:
    engine, rec = engine_for(url, key)
    job = engine.load_model()
    assert engine.wait(job, 30)
    failed = rec.of(job, ev.JobFailed)
    assert not failed, failed
    return engine, rec, rec.of(job, ev.ModelLoaded)[0]


def turn(engine: RemoteEngine, rec: Recorder, job: int, timeout: float = 60.0) -> ev.TurnFinished:
    assert engine.wait(job, timeout)
    assert not rec.of(job, ev.JobFailed), rec.of(job, ev.JobFailed)
    return rec.of(job, ev.TurnFinished)[0]


def test_turns_stream_and_follow_ups_reuse_the_servers_cache(olmo_server):
    engine, rec, loaded = connect(olmo_server.root)
    try:
        assert loaded.info.name == "tiny-remote-instruct" and loaded.info.path == ""
        assert loaded.context_tokens == 2048 and loaded.info.fingerprint
        engine.open_conversation("c1", system_prompt=None, state=None, sampling=GREEDY)
        first = turn(engine, rec, engine.send("c1", "Hello there", message_id="u1", reply_id="r1", sampling=GREEDY))
        deltas = "".join(e.text for e in rec.of(first.job_id, ev.TextDelta))
        assert first.reply is not None and first.reply.id == "r1" and first.reply.content == deltas
        assert [m.id for m in first.messages] == ["u1", "r1"]
        assert first.stats.generated_tokens >= 1 and first.stats.finish_reason in ("stop", "length")
        assert first.stats.context_limit == 2048 and first.stats.context_used > first.stats.generated_tokens
        assert first.provenance is not None and first.provenance.model_fingerprint == loaded.info.fingerprint
        assert {n.id for n in first.state.nodes} == {"u1", "r1"} and first.state.tokens == ()

        follow = turn(engine, rec, engine.send("c1", "And once more", message_id="u2", reply_id="r2", sampling=GREEDY))
        # The server kept the first turn's cache: the follow-up only prefilled what was new.
        assert follow.stats.cached_tokens > 0 and follow.stats.reconcile == "append"
        assert follow.stats.prompt_tokens < first.stats.context_used
        assert [m.id for m in follow.messages] == ["u1", "r1", "u2", "r2"]

        again = turn(engine, rec, engine.regenerate("c1", reply_id="r2b", sampling={**GREEDY, "seed": 3}))
        assert again.messages[-1].id == "r2b" and again.messages[-1].branch_count == 2
        edited = turn(engine, rec, engine.edit("c1", 1, "Something else", message_id="u2e", reply_id="r2e"))
        assert [m.id for m in edited.messages] == ["u1", "r1", "u2e", "r2e"]
        job = engine.switch_branch("c1", 1, 0, "user")
        assert engine.wait(job, 10)
        assert [m.id for m in rec.of(job, ev.BranchSwitched)[0].messages] == ["u1", "r1", "u2", "r2b"]

        # A conversation saved by the window opens with its tree.
        job = engine.open_conversation("c2", system_prompt="Be brief.", state=edited.state, sampling=GREEDY)
        assert engine.wait(job, 10)
        opened = rec.of(job, ev.ConversationOpened)[0]
        assert [m.id for m in opened.messages] == ["u1", "r1", "u2e", "r2e"] and opened.context_limit == 2048
    finally:
        assert engine.shutdown(10)


def test_cancel_cuts_the_stream_and_the_next_turn_runs(olmo_server):
    engine, rec, _ = connect(olmo_server.root)
    try:
        engine.open_conversation("c1", system_prompt=None, state=None, sampling=LONG)
        job = engine.send("c1", "Write at length", message_id="u1", reply_id="r1", sampling=LONG)
        rec.wait_for(job, ev.TextDelta)
        engine.cancel()
        finished = turn(engine, rec, job, 10)
        assert finished.stats.finish_reason == "cancelled"
        assert finished.reply is not None and finished.reply.finish_reason == "cancelled"
        assert finished.reply.content == "".join(e.text for e in rec.of(job, ev.TextDelta))
        assert finished.stats.generated_tokens < 1800
        # Cancelled before it started: nothing is kept, as with the local engine.
        engine.cancel()
        queued = engine.send("c1", "Never mind", message_id="u2", reply_id="r2", sampling=GREEDY)
        engine.cancel()
        assert engine.wait(queued, 10)
        assert rec.of(queued, ev.JobCancelled) and rec.of(queued, ev.TurnFinished)[0].reply is None
        after = turn(engine, rec, engine.send("c1", "Short, please", message_id="u3", reply_id="r3", sampling=GREEDY))
        assert [m.id for m in after.messages] == ["u1", "r1", "u3", "r3"]
    finally:
        assert engine.shutdown(10)


@pytest.mark.parametrize("key", ["wrong", None])
def test_a_refused_key_is_one_clear_message(olmo_server, key):
    engine, rec = engine_for(olmo_server.root, key)
    try:
        job = engine.load_model()
        assert engine.wait(job, 30)
        failed = rec.of(job, ev.JobFailed)[0]
        assert "refused the API key" in failed.message and "\n" not in failed.message
        assert not rec.of(job, ev.ModelLoaded)
    finally:
        assert engine.shutdown(10)


def test_a_server_killed_mid_reply_is_an_error_within_seconds(remote_model_dir, tmp_path):
    server = ServeProcess(remote_model_dir, tmp_path / "kv", "--api-key", KEY)
    engine, rec, _ = connect(server.root)
    try:
        engine.open_conversation("c1", system_prompt=None, state=None, sampling=LONG)
        first = turn(engine, rec, engine.send("c1", "Hi", message_id="u1", reply_id="r1", sampling=GREEDY))
        job = engine.send("c1", "Write at length", message_id="u2", reply_id="r2", sampling=LONG)
        rec.wait_for(job, ev.TextDelta)
        server.proc.kill()
        assert engine.wait(job, 10)
        failed = rec.of(job, ev.JobFailed)[0]
        assert "closed the connection" in failed.message or "Lost the connection" in failed.message
        # The engine lives on; the next turn says the server is gone, and the conversation is as it was.
        server.proc.wait(30)  # gone for good (its listening socket too), not just its reply
        job = engine.send("c1", "Are you there?", message_id="u3", reply_id="r3", sampling=GREEDY)
        assert engine.wait(job, 15)
        assert "connection was refused" in rec.of(job, ev.JobFailed)[0].message
        job = engine.switch_branch("c1", 0, 0)
        assert engine.wait(job, 10)
        assert [m.id for m in rec.of(job, ev.BranchSwitched)[0].messages] == [m.id for m in first.messages]
    finally:
        assert engine.shutdown(10)
        server.proc.wait(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_server_is_one_clear_message():
    engine, rec = engine_for(f"127.0.0.1:{_free_port()}")
    try:
        job = engine.load_model()
        assert engine.wait(job, 15)
        assert "connection was refused" in rec.of(job, ev.JobFailed)[0].message
        # Jobs before a connection: an error event, never a crash.
        job = engine.open_conversation("c1", system_prompt=None, state=None, sampling=None)
        assert engine.wait(job, 5)
        assert "connect to the server first" in rec.of(job, ev.JobFailed)[0].message
    finally:
        assert engine.shutdown(5)


INFO = {"object": "olmo.info", "model": "canned", "info": {"name": "<b>Canned</b>\nmodel"}, "context_tokens": 512}


@pytest.mark.parametrize(
    ("routes", "says"),
    [
        ({"/health": (200, {}, b"<html>hello</html>")}, "not JSON"),
        ({"/health": (200, {}, b'{"status": "ok"}')}, "not an Olmo server"),
        ({"/health": (200, {}, b"[" * 5000 + b"]" * 5000)}, "not JSON"),
        ({"/health": (200, {}, b'{"status": "ok", "pad": "' + b"x" * (2 * 1024**2) + b'"}')}, "larger than"),
        (
            {"/health": (503, {}, b'{"status": "group_down", "error": "rank 1 of 2 stopped answering"}')},
            "unavailable: rank 1 of 2 stopped answering",
        ),
    ],
)
def test_answers_no_olmo_server_gives_are_clear_messages(canned: Canned, routes, says):
    canned.routes.update(routes)
    engine, rec = engine_for(f"127.0.0.1:{canned.port}")
    try:
        job = engine.load_model()
        assert engine.wait(job, 15)
        failed = rec.of(job, ev.JobFailed)
        assert failed and says in failed[0].message, failed
    finally:
        assert engine.shutdown(5)


@pytest.mark.parametrize(
    ("chat", "says"),
    [
        ((503, {}, b'{"error": {"message": "the group lost rank 1", "code": "group_down"}}'), "the group lost rank 1"),
        ((200, {"Content-Type": "text/event-stream"}, b"data: {nope\n\n"), "not JSON"),
        ((200, {"Content-Type": "text/event-stream"}, b'data: {"x": 1}\n\n'), "not a chat completion chunk"),
        ((200, {"Content-Type": "text/event-stream"}, b"data: [DONE]\n\n"), "without saying how it finished"),
        ((200, {"Content-Type": "text/html"}, b"<p>hi</p>"), "did not stream"),
        (
            (200, {"Content-Type": "text/event-stream"}, b'data: {"error": {"message": "engine failed"}}\n\n'),
            "stopped the reply: engine failed",
        ),
    ],
)
def test_a_broken_reply_is_a_message_and_the_conversation_stays(canned: Canned, chat, says):
    canned.json("/health", 200, {"status": "ok"})
    canned.json("/v1/olmo/info", 200, INFO)
    canned.routes["/v1/chat/completions"] = chat
    engine, rec, loaded = connect(f"http://127.0.0.1:{canned.port}/v1")
    try:
        assert loaded.info.name == "<b>Canned</b> model"  # one line of plain text; the window shows it as text
        assert loaded.context_tokens == 512
        engine.open_conversation("c1", system_prompt=None, state=None, sampling=GREEDY)
        job = engine.send("c1", "Hello", message_id="u1", reply_id="r1")
        assert engine.wait(job, 15)
        assert says in rec.of(job, ev.JobFailed)[0].message
        job = engine.open_conversation("c1", system_prompt=None, state=None, sampling=None)
        assert engine.wait(job, 5)
        assert rec.of(job, ev.ConversationOpened)[0].messages == ()  # the failed message was taken back out
    finally:
        assert engine.shutdown(5)


def test_a_prompt_that_does_not_fit_is_a_context_overflow(canned: Canned):
    canned.json("/health", 200, {"status": "ok"})
    canned.json("/v1/olmo/info", 200, INFO)
    message = (
        "This model's maximum context length is 512 tokens. However, you requested 700 tokens (600 in the "
        "messages, 100 in the completion). Please reduce the length of the messages or completion."
    )
    canned.json("/v1/chat/completions", 400, {"error": {"message": message, "code": "context_length_exceeded"}})
    engine, rec, _ = connect(f"127.0.0.1:{canned.port}")
    try:
        engine.open_conversation("c1", system_prompt=None, state=None, sampling=GREEDY)
        job = engine.send("c1", "Hello", message_id="u1", reply_id="r1")
        overflow = rec.wait_for(job, ev.ContextOverflow, 15)
        assert (overflow.used, overflow.max_tokens, overflow.limit, overflow.droppable_turns) == (600, 100, 512, 0)
    finally:
        assert engine.shutdown(5)


@pytest.mark.parametrize(
    ("typed", "url"),
    [
        ("10.0.0.5", "http://10.0.0.5:8000"),
        ("10.0.0.5:9000/v1/", "http://10.0.0.5:9000"),
        ("https://olmo.example.org/api/v1", "https://olmo.example.org:443/api"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_addresses_people_type(typed, url):
    assert parse_address(typed).url == url


@pytest.mark.parametrize(
    "typed", ["", "ftp://host", "http://", "http://u:p@host:1", "host:99999", "host:0", "a b", "http://h:1/?x=1"]
)
def test_addresses_that_are_no_server_say_why(typed):
    with pytest.raises(ValueError) as info:
        parse_address(typed)
    assert str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("capabilities", [{"thinking_budget": True}, None])
def test_the_thinking_budget_goes_to_a_server_that_takes_it(canned: Canned, capabilities):
    canned.json("/health", 200, {"status": "ok"})
    canned.json("/v1/olmo/info", 200, {**INFO, "capabilities": capabilities})
    done = (
        b'data: {"choices": [{"index": 0, "delta": {"content": "Hi."}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
    )
    canned.routes["/v1/chat/completions"] = (200, {"Content-Type": "text/event-stream"}, done)
    engine, rec, _ = connect(f"127.0.0.1:{canned.port}")
    try:
        engine.open_conversation("c1", system_prompt=None, state=None, sampling={**GREEDY, "thinking_budget": 5})
        fin = turn(engine, rec, engine.send("c1", "Hello", message_id="u1", reply_id="r1"))
        prov = fin.reply.provenance
        if capabilities:
            assert canned.posts[-1]["thinking_budget"] == 5
            assert prov.thinking_budget == 5 and prov.sampling.thinking_budget == 5
        else:  # a server that does not say it takes one gets none (an unknown field could be refused)
            assert "thinking_budget" not in canned.posts[-1]
            assert prov.thinking_budget is None
    finally:
        assert engine.shutdown(5)


def test_a_real_server_takes_the_thinking_budget(olmo_server):
    engine, rec, _ = connect(olmo_server.root)
    try:
        engine.open_conversation("c1", system_prompt=None, state=None, sampling={**GREEDY, "thinking_budget": 7})
        fin = turn(engine, rec, engine.send("c1", "Hello", message_id="u1", reply_id="r1"))
        assert fin.reply.provenance.thinking_budget == 7
    finally:
        assert engine.shutdown(10)
