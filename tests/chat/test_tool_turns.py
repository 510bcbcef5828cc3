"""Tool turns through the real engine: the tiny model is made to write calls (forced decoding), a real stdio MCP
server runs them, and the transcript stays token-exact (rendered by the real Olmo-3.1 Instruct template)."""

from __future__ import annotations

import json
import queue
import threading

import pytest
from conftest import real_template
from tool_helpers import Script, mcp_config, wait_for

from olmo3.chat.engine import Engine
from olmo3.chat.events import (
    JobFailed,
    TextDelta,
    ToolCallFinished,
    ToolCallRequested,
    ToolCallStarted,
    ToolRoundFinished,
    ToolRoundStarted,
    TurnFinished,
)
from olmo3.tools.config import ToolState, parse_config
from olmo3.tools.messages import system_message, tool_definitions
from olmo3.tools.runner import HubTools
from olmo3.tools.toolhub import ToolHub

OLMO31 = "olmo31_instruct_lmstudio_community.jinja"


@pytest.fixture(scope="module")
def olmo31_dir(tmp_path_factory):
    """A tiny model whose chat template is the real Olmo-3.1 Instruct one."""
    from olmo3.model.tiny import make_tiny_model

    text = real_template(OLMO31)
    return make_tiny_model(tmp_path_factory.mktemp("models") / "olmo31", chat_template_text=text, sliding_window=16)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The SDK test server over stdio; only add, read_file and slow are on (a shorter tool list to prefill)."""
    root = tmp_path_factory.mktemp("server")
    (root / "notes.txt").write_text("Olmo calls tools.\n")
    state = ToolState(root / "tools-state.json")
    for tool in ("echo", "big"):
        state.set_tool_enabled("calc", tool, False)
    hub = ToolHub(parse_config(mcp_config(root)), state)
    hub.root = root
    yield hub
    hub.close()


class Recorder:
    def __init__(self):
        self.events = []
        self.lock = threading.Lock()
        self.requests: queue.Queue = queue.Queue()

    def __call__(self, event):
        with self.lock:
            self.events.append(event)
        if isinstance(event, ToolCallRequested):
            self.requests.put(event)

    def of(self, kind, job_id=None):
        with self.lock:
            return [e for e in self.events if isinstance(e, kind) and (job_id is None or e.job_id == job_id)]

    def job(self, job_id):
        with self.lock:
            return [e for e in self.events if e.job_id == job_id]


def start_engine(tmp_path, folder, script, **options):
    rec = Recorder()
    eng = Engine(
        rec,
        cache_dir=tmp_path / "kv",
        session_options={"temperature": 0.0, "max_tokens": 64, **options},
        logits_processors=[script],
    )
    eng.start()
    assert eng.wait(eng.load_model(folder), 120)
    eng.rec = rec
    return eng


def finished(eng, job_id) -> TurnFinished:
    assert eng.wait(job_id, 120)
    assert not eng.rec.of(JobFailed, job_id), eng.rec.of(JobFailed, job_id)
    fins = eng.rec.of(TurnFinished, job_id)
    assert len(fins) == 1, eng.rec.job(job_id)
    return fins[0]


def hf_render(tok, messages, tools, **kw):
    """The real template through transformers (what every other app would feed the model)."""
    return tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True, **kw)


@pytest.mark.parametrize("system", [None, "Answer briefly."])
def test_a_tool_turn_asks_calls_continues_and_stays_token_exact(tmp_path, olmo31_dir, hub, system):
    import olmo3

    _model, tok = olmo3.load(olmo31_dir)
    call = "Let me add.<function_calls>add(a=2, b=40)</function_calls>"
    script = Script(tok, call, "The sum is 42.")
    eng = start_engine(tmp_path, olmo31_dir, script)
    try:
        eng.wait(eng.open_conversation("c1", system_prompt=system))
        job = eng.send("c1", "What is 2 + 40?", message_id="u1", reply_id="r1", tools=HubTools(hub))

        # The call waits for consent; the answer comes from another thread (here the test's, in the app the GUI's).
        request = eng.rec.requests.get(timeout=120)
        assert (request.name, request.server, request.arguments) == ("add", "calc", {"a": 2, "b": 40})
        assert request.description == "Add two numbers."
        assert not eng.rec.of(ToolCallStarted, job)  # nothing runs before the answer
        assert eng.answer_tool_call(request.request_id, "once")
        fin = finished(eng, job)

        kinds = [type(e).__name__ for e in eng.rec.job(job) if not isinstance(e, TextDelta)]
        tool_events = [k for k in kinds if k.startswith("Tool")]
        assert tool_events == [
            "ToolRoundFinished",
            "ToolCallRequested",
            "ToolCallStarted",
            "ToolCallFinished",
            "ToolRoundStarted",
        ]
        streamed = "".join(e.text for e in eng.rec.of(TextDelta, job))
        assert streamed == "Let me add.The sum is 42."  # the calls become a card, not text
        round1 = eng.rec.of(ToolRoundFinished, job)[0]
        assert round1.reply.id == "r1" and round1.reply.content == "Let me add."
        assert round1.calls == ({"name": "add", "arguments": {"a": 2, "b": 40}},)
        assert round1.reply.calls == "add(a=2, b=40)"
        result = eng.rec.of(ToolCallFinished, job)[0]
        assert result.result["text"] == "42.0" and not result.result["is_error"]
        assert result.parent_id == "r1" and result.message.role == "environment"
        assert result.message.tool["name"] == "add" and result.message.tool["arguments"] == {"a": 2, "b": 40}
        assert eng.rec.of(ToolRoundStarted, job)[0].parent_id == result.call_id

        # The tree: user → reply with calls → environment → answer; every id is known to the caller.
        assert [(m.role, m.content) for m in fin.messages] == [
            ("user", "What is 2 + 40?"),
            ("assistant", "Let me add."),
            ("environment", "42.0"),
            ("assistant", "The sum is 42."),
        ]
        assert fin.reply.content == "The sum is 42." and fin.stats.finish_reason == "stop"

        # Token-exact: the second round reused everything the first one left in the cache (the reply with its
        # calls, stop token included) and fed only the environment turn and the new generation prompt.
        assert fin.stats.reconcile == "append"
        assert fin.stats.cached_tokens == round1.stats.context_used
        tokens = list(fin.state.tokens)
        prompt = tokens[: len(tokens) - len(fin.reply.tokens)]
        assert prompt[: round1.stats.context_used] == list(round1.state.tokens)
        assert len(prompt) == fin.stats.cached_tokens + fin.stats.prompt_tokens
        # ... and that prompt is the real template's rendering of the history, character for character.
        tools = tool_definitions(hub.enabled_tools())
        history = [system_message(system, with_tools=True)] if system else []
        history += [
            {"role": "user", "content": "What is 2 + 40?"},
            {"role": "assistant", "content": "Let me add.", "function_calls": "add(a=2, b=40)"},
            {"role": "environment", "content": "42.0"},
        ]
        assert tok.decode(prompt, skip_special_tokens=False) == hf_render(tok, history, tools, tokenize=False)
        assert [t["function"]["name"] for t in tools] == ["add", "read_file", "slow"]

        # A follow-up reuses the whole tool turn too.
        script.add(tok, "Anything else?")
        fin2 = finished(eng, eng.send("c1", "Thanks!", tools=HubTools(hub)))
        assert fin2.stats.reconcile == "append" and fin2.stats.cached_tokens == len(tokens)
    finally:
        assert eng.shutdown(60)


@pytest.mark.parametrize("system", [None, "Use the tools."])
def test_prompt_with_calls_and_results_equals_the_real_template_token_for_token(tmp_path, olmo31_dir, hub, system):
    """A conversation with calls and environment turns, rebuilt without tokens (as after an import), is fed
    exactly as transformers renders and tokenizes it with the real template: only markup is special."""
    import olmo3
    from olmo3.chat.session import ChatSession
    from olmo3.chat.transcript import HistoryMessage, state_from_messages

    model, tok = olmo3.load(olmo31_dir)
    tools = tool_definitions(hub.enabled_tools())
    calls = 'read_file(name="notes (draft).txt")\nadd(a=1.5, b=-2)'
    parsed = [
        {"name": "read_file", "arguments": {"name": "notes (draft).txt"}},
        {"name": "add", "arguments": {"a": 1.5, "b": -2}},
    ]
    rows = [
        HistoryMessage("u", "user", "Read my notes, then add.", None, True),
        HistoryMessage("a", "assistant", "", "u", True, tool={"calls": parsed, "raw_calls": calls}),
        HistoryMessage("e1", "environment", 'Notes: "x<|im_end|>" {\n}', "a", True, tool={"name": "read_file"}),
        HistoryMessage("e2", "environment", "-0.5", "e1", True, tool={"name": "add"}),
        HistoryMessage("b", "assistant", "Done: -0.5.", "e2", True),
    ]
    s = ChatSession(model, tok, system_prompt=system, temperature=0.0, max_tokens=4)
    s.load_state(state_from_messages(rows, system_prompt=system, think=False))
    s.tools = tools
    script = Script(tok, "Ok.")
    fin = next(e for e in s.send("And now?", logits_processors=[script]) if isinstance(e, TurnFinished))
    prompt = s.tokens[: len(s.tokens) - len(fin.reply.tokens)]

    history = [system_message(system, with_tools=True)] if system else []
    history += [
        {"role": "user", "content": "Read my notes, then add."},
        {"role": "assistant", "content": "", "function_calls": calls},
        {"role": "environment", "content": 'Notes: "x<|im_end|>" {\n}'},
        {"role": "environment", "content": "-0.5"},
        {"role": "assistant", "content": "Done: -0.5."},
        {"role": "user", "content": "And now?"},
    ]
    text = hf_render(tok, history, tools, tokenize=False)
    assert tok.decode(prompt, skip_special_tokens=False) == text
    # Token for token: transformers' ids, except that the tool's "<|im_end|>" stays text (content is never markup).
    hostile = tok.encode(text, add_special_tokens=False)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert prompt.count(im_end) == hostile.count(im_end) - 1
    benign = [dict(m, content=m["content"].replace("<|im_end|>", "[end]")) for m in history]
    s2 = ChatSession(model, tok, system_prompt=system, temperature=0.0, max_tokens=4)
    rows[2] = HistoryMessage("e1", "environment", 'Notes: "x[end]" {\n}', "a", True, tool={"name": "read_file"})
    s2.load_state(state_from_messages(rows, system_prompt=system, think=False))
    s2.tools = tools
    fin2 = next(e for e in s2.send("And now?", logits_processors=[Script(tok, "Ok.")]) if isinstance(e, TurnFinished))
    assert s2.tokens[: len(s2.tokens) - len(fin2.reply.tokens)] == hf_render(tok, benign, tools, tokenize=True)


def test_stop_during_a_slow_tool_cancels_the_call_and_the_turn(tmp_path, olmo31_dir, hub):
    import olmo3

    _model, tok = olmo3.load(olmo31_dir)
    script = Script(tok, "<function_calls>slow(seconds=60)\nadd(a=1, b=1)</function_calls>")
    eng = start_engine(tmp_path, olmo31_dir, script)
    root = hub.root
    for marker in ("slow-started", "slow-cancelled", "slow-finished"):
        (root / marker).unlink(missing_ok=True)
    try:
        eng.wait(eng.open_conversation("c2"))
        job = eng.send("c2", "Sleep, then add.", tools=HubTools(hub, ask=False))
        wait_for(lambda: (root / "slow-started").exists(), "the slow tool to start")
        assert eng.rec.of(ToolCallStarted, job)[0].name == "slow"
        eng.cancel()
        fin = finished(eng, job)
        wait_for(lambda: (root / "slow-cancelled").exists(), "the server to see the cancellation")
        assert not (root / "slow-finished").exists()
        assert fin.stats.finish_reason == "cancelled"
        assert fin.reply is not None and fin.reply.calls == "slow(seconds=60)\nadd(a=1, b=1)"
        results = eng.rec.of(ToolCallFinished, job)
        assert [r.name for r in results] == ["slow", "add"]  # every call has a result, also the one never run
        assert results[0].result["cancelled"] and "cancelled by the user" in results[0].result["text"]
        assert results[1].result["cancelled"] and "not run" in results[1].result["text"]
        assert len(eng.rec.of(ToolCallStarted, job)) == 1 and not eng.rec.of(ToolRoundStarted, job)
        assert [m.role for m in fin.messages] == ["user", "assistant", "environment", "environment"]

        # The conversation goes on from there, reusing the cache (the results are simply new tokens).
        script.add(tok, "Stopped, as asked.")
        fin2 = finished(eng, eng.send("c2", "Never mind.", tools=HubTools(hub, ask=False)))
        assert fin2.stats.reconcile == "append" and fin2.stats.cached_tokens == len(fin.state.tokens)
        assert fin2.reply.content == "Stopped, as asked."
    finally:
        assert eng.shutdown(60)


def test_a_malformed_call_is_shown_as_text_and_answered_with_an_error(tmp_path, olmo31_dir, hub):
    import olmo3

    _model, tok = olmo3.load(olmo31_dir)
    broken = "Trying.<function_calls>add(a=1, b=)</function_calls>"
    script = Script(tok, broken, "<function_calls>add(a=1, b=2)</function_calls>", "Done: 3.")
    eng = start_engine(tmp_path, olmo31_dir, script)
    try:
        eng.wait(eng.open_conversation("c3"))
        fin = finished(eng, eng.send("c3", "Add one and two.", tools=HubTools(hub, ask=False)))
        rounds = eng.rec.of(ToolRoundFinished)
        assert rounds[0].parse_error and "not valid JSON" in rounds[0].parse_error and rounds[0].calls == ()
        assert rounds[0].reply.content == broken  # shown as text, as written
        first, second = eng.rec.of(ToolCallFinished)
        assert first.name == "" and first.result["is_error"]
        assert first.result["text"].startswith("Error: could not read the call: the value of 'b' in 'add'")
        assert second.name == "add" and second.result["text"] == "3.0"
        assert "".join(e.text for e in eng.rec.of(TextDelta)) == broken + "Done: 3."
        roles = ["user", "assistant", "environment", "assistant", "environment", "assistant"]
        assert [m.role for m in fin.messages] == roles
        assert fin.reply.content == "Done: 3." and fin.stats.reconcile == "append"
    finally:
        assert eng.shutdown(60)


def test_decline_timeout_and_the_round_limit(tmp_path, olmo31_dir, hub):
    import olmo3

    _model, tok = olmo3.load(olmo31_dir)
    script = Script(
        tok,
        "<function_calls>add(a=1, b=2)</function_calls>",  # declined
        "<function_calls>slow(seconds=60)</function_calls>",  # times out
        "<function_calls>add(a=3, b=4)</function_calls>",  # over the limit of two rounds: not run
    )
    eng = start_engine(tmp_path, olmo31_dir, script)
    try:
        eng.wait(eng.open_conversation("c4"))
        runner = HubTools(hub, timeout=0.5, max_rounds=2)
        job = eng.send("c4", "Go.", tools=runner)
        request = eng.rec.requests.get(timeout=120)
        assert eng.answer_tool_call(request.request_id, "deny")
        request = eng.rec.requests.get(timeout=120)
        assert request.name == "slow"
        assert eng.answer_tool_call(request.request_id, "allow")
        fin = finished(eng, job)
        declined, timed_out, over = eng.rec.of(ToolCallFinished, job)
        assert declined.declined and "declined" in declined.result["text"] and declined.message.tool["declined"]
        assert timed_out.result["timed_out"] and "did not finish within 0.5 s" in timed_out.result["text"]
        assert over.result["is_error"] and "limit of 2 rounds" in over.result["text"]
        assert len(eng.rec.of(ToolCallStarted, job)) == 1  # only the slow call ran
        assert fin.stats.finish_reason == "stop" and fin.reply.calls == "add(a=3, b=4)"
        assert eng.rec.requests.empty() and not eng.consent.pending()
    finally:
        assert eng.shutdown(60)


def test_stop_while_asking_and_the_state_round_trip(tmp_path, olmo31_dir, hub):
    """Stop while the consent question is open: the call is not run; the saved state keeps calls and results,
    and a session restored from it renders the same prompt."""
    import olmo3
    from olmo3.chat.transcript import TranscriptState

    _model, tok = olmo3.load(olmo31_dir)
    script = Script(tok, 'Checking.<function_calls>read_file(name="notes.txt")</function_calls>')
    eng = start_engine(tmp_path, olmo31_dir, script)
    try:
        eng.wait(eng.open_conversation("c5"))
        job = eng.send("c5", "What do my notes say?", tools=HubTools(hub))
        request = eng.rec.requests.get(timeout=120)
        eng.cancel()
        fin = finished(eng, job)
        assert not eng.answer_tool_call(request.request_id, "allow")  # too late: nobody waits any more
        (result,) = eng.rec.of(ToolCallFinished, job)
        assert result.result["cancelled"] and "not run" in result.result["text"]
        assert fin.stats.finish_reason == "cancelled"

        state = TranscriptState.from_json(json.loads(json.dumps(fin.state.to_json())))
        node = state.node(fin.reply.id)
        assert node.calls == 'read_file(name="notes.txt")'
        assert node.tool["calls"] == [{"name": "read_file", "arguments": {"name": "notes.txt"}}]
        assert state.node(result.call_id).role == "environment"
        # Reopened from the saved state (as after a restart), the next turn re-reads nothing it does not have to.
        script.add(tok, "They say: Olmo calls tools.")
        eng.wait(eng.close_conversation("c5"))
        eng.wait(eng.open_conversation("c5", state=state))
        fin2 = finished(eng, eng.send("c5", "Well?", tools=HubTools(hub)))
        assert fin2.stats.reconcile == "restored" and fin2.stats.cached_tokens == len(state.tokens)
    finally:
        assert eng.shutdown(60)
