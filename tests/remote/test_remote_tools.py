"""Tools in a remote turn: the app's MCP tools (a real stdio MCP server, run here) offered to a real Olmo server,
its ``tool_calls`` asked about, run here and answered with ``tool`` messages, as a local turn does.

The server is the real app (``olmo3.serve``'s, on its own thread over an in-process engine, as the desktop's local
server runs), so the tiny model can be made to write a call: the engine's logits processor forces each reply's
text (forced decoding, ``tool_helpers.Script``). A stand-in server records the request bodies."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import pytest
from conftest import real_template
from remote_helpers import Canned
from tool_helpers import Script, mcp_config

from olmo3.chat import events as ev
from olmo3.chat.engine import Engine
from olmo3.remote.client import parse_address
from olmo3.remote.engine import RemoteEngine
from olmo3.serve.server import LocalServer, ServeConfig
from olmo3.tools.config import ToolState, parse_config
from olmo3.tools.runner import HubTools
from olmo3.tools.toolhub import ToolHub

GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_tokens": 64, "seed": 0}
CALL = "Let me add.<function_calls>add(a=2, b=40)</function_calls>"
TOOL_EVENTS = ["ToolRoundFinished", "ToolCallRequested", "ToolCallStarted", "ToolCallFinished", "ToolRoundStarted"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The SDK test server over stdio; add, read_file and slow are on."""
    root = tmp_path_factory.mktemp("mcp")
    (root / "notes.txt").write_text("Olmo calls tools.\n")
    state = ToolState(root / "tools-state.json")
    for tool in ("echo", "big"):
        state.set_tool_enabled("calc", tool, False)
    hub = ToolHub(parse_config(mcp_config(root)), state)
    yield hub
    hub.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(the server's base URL, the forcing script, tokenizer): the real server app over a tiny Olmo-3.1 Instruct."""
    import olmo3
    from olmo3.model.tiny import make_tiny_model

    folder = make_tiny_model(
        tmp_path_factory.mktemp("models") / "tiny-tools",
        chat_template_text=real_template("olmo31_instruct_lmstudio_community.jinja"),
        sliding_window=16,
        max_position_embeddings=2048,
    )
    _model, tok = olmo3.load(folder)
    script = Script(tok)
    engine = Engine(None, cache_dir=tmp_path_factory.mktemp("kv"), logits_processors=[script])
    engine.start()
    assert engine.wait(engine.load_model(folder), 120)
    server = LocalServer(engine, ServeConfig(port=0))
    server.start()
    try:
        yield server.base_url, script, tok
    finally:
        server.stop()
        assert engine.shutdown(60)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.lock = threading.Lock()
        self.requests: queue.Queue[ev.ToolCallRequested] = queue.Queue()

    def __call__(self, event: Any) -> None:
        with self.lock:
            self.events.append(event)
        if isinstance(event, ev.ToolCallRequested):
            self.requests.put(event)

    def of(self, job: int, kind: type | None = None) -> list[Any]:
        with self.lock:
            return [e for e in self.events if e.job_id == job and (kind is None or isinstance(e, kind))]

    def kinds(self, job: int) -> list[str]:
        return [type(e).__name__ for e in self.of(job) if type(e).__name__.startswith("Tool")]


def connect(url: str) -> tuple[RemoteEngine, Recorder]:
    rec = Recorder()
    engine = RemoteEngine(rec, parse_address(url))
    engine.start()
    job = engine.load_model()
    assert engine.wait(job, 30) and not rec.of(job, ev.JobFailed), rec.of(job)
    assert engine.wait(engine.open_conversation("c1", sampling=GREEDY), 10)
    return engine, rec


def finished(engine: RemoteEngine, rec: Recorder, job: int) -> ev.TurnFinished:
    assert engine.wait(job, 120)
    assert not rec.of(job, ev.JobFailed), rec.of(job, ev.JobFailed)
    fins = rec.of(job, ev.TurnFinished)
    assert len(fins) == 1, rec.of(job)
    return fins[0]


def test_a_remote_turn_asks_runs_the_call_here_and_continues(served, hub):
    url, script, tok = served
    script.add(tok, CALL, "The sum is 42.")
    engine, rec = connect(url)
    try:
        job = engine.send("c1", "What is 2 + 40?", message_id="u1", reply_id="r1", tools=HubTools(hub))
        request = rec.requests.get(timeout=120)
        assert (request.name, request.server, request.arguments) == ("add", "calc", {"a": 2, "b": 40})
        assert request.description == "Add two numbers." and request.round == 1
        assert not rec.of(job, ev.ToolCallStarted)  # nothing runs before the answer
        assert engine.answer_tool_call(request.request_id, "once")
        fin = finished(engine, rec, job)

        assert rec.kinds(job) == TOOL_EVENTS
        assert "".join(e.text for e in rec.of(job, ev.TextDelta)) == "Let me add.The sum is 42."
        round1 = rec.of(job, ev.ToolRoundFinished)[0]
        assert round1.reply.id == "r1" and round1.reply.content == "Let me add."
        assert round1.calls == ({"name": "add", "arguments": {"a": 2, "b": 40}},)
        assert round1.reply.calls == "add(a=2, b=40)" and round1.stats.finish_reason == "stop"
        result = rec.of(job, ev.ToolCallFinished)[0]
        assert result.call_id == request.call_id and result.parent_id == "r1"
        assert result.result["text"] == "42.0" and not result.result["is_error"] and not result.declined
        assert result.message.role == "environment" and result.message.content == "42.0"
        started = rec.of(job, ev.ToolRoundStarted)[0]
        assert (started.parent_id, started.round) == (result.call_id, 2)

        assert fin.reply is not None and fin.reply.id == started.reply_id and fin.reply.content == "The sum is 42."
        assert [(m.role, m.id) for m in fin.messages] == [
            ("user", "u1"),
            ("assistant", "r1"),
            ("environment", result.call_id),
            ("assistant", started.reply_id),
        ]
        # The server read the result after the first round it had cached: the calls went back as it wrote them.
        assert fin.stats.cached_tokens >= round1.stats.context_used > 0
        saved = {n.id: n for n in fin.state.nodes}
        assert saved["r1"].tool == {"calls": list(round1.calls), "raw_calls": "add(a=2, b=40)"}
        assert saved[result.call_id].tool["name"] == "add"

        # A follow-up sends the earlier call as tool_calls + a tool message: the whole conversation is reused.
        script.add(tok, "You are welcome.")
        after = finished(engine, rec, engine.send("c1", "Thanks!", tools=HubTools(hub)))
        assert after.reply.content == "You are welcome." and not rec.kinds(after.job_id)
        assert after.stats.cached_tokens >= fin.stats.context_used
    finally:
        assert engine.shutdown(10)


def test_a_denied_call_is_answered_and_stop_during_a_tool_ends_the_turn(served, hub):
    url, script, tok = served
    script.add(tok, CALL, "Fine, no tools.")
    engine, rec = connect(url)
    try:
        job = engine.send("c1", "Add two numbers.", tools=HubTools(hub))
        request = rec.requests.get(timeout=120)
        assert engine.answer_tool_call(request.request_id, "deny")
        fin = finished(engine, rec, job)
        assert rec.kinds(job) == ["ToolRoundFinished", "ToolCallRequested", "ToolCallFinished", "ToolRoundStarted"]
        declined = rec.of(job, ev.ToolCallFinished)[0]
        assert declined.declined and declined.result["is_error"] and "declined" in declined.result["text"]
        assert fin.reply.content == "Fine, no tools." and fin.stats.finish_reason == "stop"
        assert not engine.answer_tool_call(request.request_id, "allow")  # nobody waits for it anymore

        # Stop while a slow tool runs: the call is cancelled (MCP cancellation), the turn ends with its last reply.
        script.add(tok, "<function_calls>slow(seconds=30)</function_calls>")
        job = engine.send("c1", "Sleep.", tools=HubTools(hub, ask=False))
        deadline = time.monotonic() + 120
        while not rec.of(job, ev.ToolCallStarted):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        engine.cancel()
        fin = finished(engine, rec, job)
        stopped = rec.of(job, ev.ToolCallFinished)[0]
        assert stopped.result["cancelled"] and stopped.name == "slow"
        assert fin.stats.finish_reason == "cancelled" and fin.reply is not None and fin.reply.calls
        assert not rec.of(job, ev.ToolRoundStarted) and not rec.of(job, ev.JobCancelled)
        assert fin.messages[-1].role == "environment"
    finally:
        assert engine.shutdown(10)


INFO = {"object": "olmo.info", "model": "canned", "info": {"name": "Canned"}, "context_tokens": 2048}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_the_requests_carry_the_tools_the_calls_and_the_results(canned: Canned, hub):
    canned.json("/health", 200, {"status": "ok"})
    canned.json("/v1/olmo/info", 200, INFO)
    path = "/v1/chat/completions"
    # The calls come in pieces, as OpenAI streams them: the name first, the arguments after, by index.
    canned.stream(
        path,
        _chunk({"role": "assistant", "content": "Adding."}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "add"}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 2, '}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"b": 40}'}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "read_file"}}]}),
        _chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"name": "notes.txt"}'}}]}),
        _chunk({}, "tool_calls"),
    )
    canned.stream(path, _chunk({"content": "Done: <b>42</b>."}), _chunk({}, "stop"))
    canned.stream(path, _chunk({"content": "Bye."}), _chunk({}, "stop"))
    rec = Recorder()
    engine = RemoteEngine(rec, parse_address(f"127.0.0.1:{canned.port}"))
    engine.start()
    try:
        assert engine.wait(engine.load_model(), 15)
        assert engine.wait(engine.open_conversation("c1", sampling=GREEDY), 10)
        fin = finished(engine, rec, engine.send("c1", "Add, then read.", tools=HubTools(hub, ask=False)))
        assert rec.kinds(fin.job_id) == [
            "ToolRoundFinished",
            "ToolCallStarted",
            "ToolCallFinished",
            "ToolCallStarted",
            "ToolCallFinished",
            "ToolRoundStarted",
        ]
        results = rec.of(fin.job_id, ev.ToolCallFinished)
        assert [r.result["text"] for r in results] == ["42.0", "Olmo calls tools.\n"]
        assert fin.reply.content == "Done: <b>42</b>."  # content, as it came

        first, second = canned.posts[0], canned.posts[1]
        assert {t["function"]["name"] for t in first["tools"]} == {"add", "read_file", "slow"}
        assert all(t["type"] == "function" and "parameters" in t["function"] for t in first["tools"])
        assert first["messages"] == [{"role": "user", "content": "Add, then read."}]
        assert second["tools"] == first["tools"]
        _user, reply, *tool_messages = second["messages"]
        ids = [r.call_id for r in results]
        assert reply["content"] == "Adding." and [c["id"] for c in reply["tool_calls"]] == ids
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in reply["tool_calls"]] == [
            ("add", {"a": 2, "b": 40}),
            ("read_file", {"name": "notes.txt"}),
        ]
        assert tool_messages == [
            {"role": "tool", "content": "42.0", "tool_call_id": ids[0]},
            {"role": "tool", "content": "Olmo calls tools.\n", "tool_call_id": ids[1]},
        ]

        # Without tools, a later turn still sends the history's calls and results the same way.
        bye = finished(engine, rec, engine.send("c1", "Bye"))
        assert bye.reply.content == "Bye."
        third = canned.posts[2]
        assert "tools" not in third
        assert third["messages"][:4] == second["messages"]
        assert third["messages"][4]["role"] == "assistant" and third["messages"][4]["content"] == "Done: <b>42</b>."
    finally:
        assert engine.shutdown(5)


def test_a_tool_call_that_cannot_be_read_is_one_clear_message(canned: Canned, hub):
    canned.json("/health", 200, {"status": "ok"})
    canned.json("/v1/olmo/info", 200, INFO)
    bad = {"tool_calls": [{"index": 0, "id": "x", "function": {"name": "add", "arguments": "{not json"}}]}
    canned.stream("/v1/chat/completions", _chunk(bad), _chunk({}, "tool_calls"))
    rec = Recorder()
    engine = RemoteEngine(rec, parse_address(f"127.0.0.1:{canned.port}"))
    engine.start()
    try:
        assert engine.wait(engine.load_model(), 15)
        assert engine.wait(engine.open_conversation("c1", sampling=GREEDY), 10)
        job = engine.send("c1", "Add.", tools=HubTools(hub, ask=False))
        assert engine.wait(job, 30)
        failed = rec.of(job, ev.JobFailed)[0]
        assert "tool call that cannot be read" in failed.message and "\n" not in failed.message
        assert not rec.of(job, ev.ToolCallStarted)
    finally:
        assert engine.shutdown(5)
