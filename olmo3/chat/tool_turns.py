"""Tool turns: Olmo-3 calls tools inside one turn, and the transcript stays token-exact through it.

One turn may run several rounds. Each round is an ordinary generation of :class:`olmo3.chat.session.ChatSession`
with the offered tools in the model's own template (``session.tools``); when the reply ends with a
``<function_calls>`` block, the calls run and their results become ``environment`` turns, and the model goes on::

    user → assistant (text + calls) → environment (one per call, in call order) → assistant … → assistant (answer)

Token-exact: a reply with calls keeps its sampled ids (stop token included) in ``session.tokens``; the node renders
back as ``content`` + the calls verbatim (``function_calls``, exactly as generated, see ``olmo3.tools.messages``),
so the next round's rendering starts with the cached text and only ``\\n<|im_start|>environment\\n…`` is new
("append"). Results and arguments are content: the template sandbox protects them, so no control token comes from
a tool. A malformed block stays in the reply as text and is answered with an error result, so the model can retry.

Threads: this runs on the engine thread, inside the job. A call runs on the ``ToolRunner``'s side (``ToolHub``'s
asyncio thread); the engine thread only waits for its handle, polling the job's stop flag, so Stop cancels the
running call (MCP cancellation) and the turn. Consent works the same way: a ``ToolCallRequested`` event goes out
with a request id and the engine thread waits on :class:`ConsentDesk` until the GUI (on its thread) or the CLI (in
its terminal) answers through ``Engine.answer_tool_call``, or the job is cancelled.

Limits: at most ``runner.max_rounds`` rounds of calls per turn; calls beyond that are answered "not run" and the
turn ends. Every call gets a result (declined, stopped, not run, timed out: all are results the model reads).

MLX-free: the session does the generating; this module only drives it (``session`` is typed loosely).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..ids import new_id
from ..tools.calls import CLOSE_TAG, OPEN_TAG, FunctionCall, ToolCallParseError, parse_reply
from ..tools.info import ToolResult, error_result
from .events import (
    Event,
    TextDelta,
    ToolCallFinished,
    ToolCallRequested,
    ToolCallStarted,
    ToolRoundFinished,
    ToolRoundStarted,
    TurnFinished,
)
from .transcript import THINK_CLOSE, OverflowPolicy, TranscriptMessage

log = logging.getLogger(__name__)

DEFAULT_MAX_ROUNDS = 8
POLL_S = 0.05  # how often a waiting engine thread looks at the stop flag
CANCEL_GRACE_S = 10.0  # after cancelling a call, how long to wait for the server to say it stopped

Decision = Literal["allow", "deny"]


class CallHandle(Protocol):
    """A call in flight (``olmo3.tools.toolhub.ToolCall`` is one)."""

    def done(self) -> bool: ...

    def result(self, timeout: float | None = None) -> ToolResult: ...

    def cancel(self) -> None: ...


@dataclass(frozen=True)
class ToolDescription:
    """What a consent question shows about a tool."""

    name: str
    server: str = ""
    description: str = ""


class ToolRunner(Protocol):
    """What a turn needs from the app's tools (``olmo3.tools.runner.HubTools`` adapts a ``ToolHub``)."""

    max_rounds: int

    def definitions(self, should_stop: Callable[[], bool]) -> list[dict[str, Any]] | None:
        """The tools to offer this turn (template definitions), or None."""
        ...

    def describe(self, name: str) -> ToolDescription | None:
        """The tool a call names, or None when there is no such tool (the call then fails with a message)."""
        ...

    def needs_consent(self, name: str) -> bool:
        """Whether to ask the person before this call runs."""
        ...

    def start(self, name: str, arguments: dict[str, Any]) -> CallHandle: ...


class ConsentDesk:
    """Questions the engine thread waits on and any thread answers (see the module docstring). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[threading.Event, list[Decision]]] = {}

    def open(self) -> int:
        """A new question; its id goes out in a ``ToolCallRequested`` (opened first, so no answer is early)."""
        with self._lock:
            request_id = next(self._ids)
            self._waiting[request_id] = (threading.Event(), [])
        return request_id

    def answer(self, request_id: int, decision: str) -> bool:
        """Answer a question: "allow" (also "once", "always") or "deny". False when nobody waits for it anymore."""
        allowed = decision in ("allow", "once", "always")
        if not allowed and decision != "deny":
            raise ValueError(f"decision {decision!r}: expected 'allow' or 'deny'")
        with self._lock:
            waiting = self._waiting.get(request_id)
            if waiting is None:
                return False
            waiting[1].append("allow" if allowed else "deny")
            waiting[0].set()
        return True

    def wait(self, request_id: int, should_stop: Callable[[], bool]) -> Decision | None:
        """The answer, or None once ``should_stop()`` says the job was cancelled (the question is closed)."""
        with self._lock:
            event, answer = self._waiting[request_id]
        try:
            while not event.wait(POLL_S):
                if should_stop():
                    return None
            return answer[0]
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)

    def pending(self) -> list[int]:
        with self._lock:
            return sorted(self._waiting)


# --- what the template can do --------------------------------------------------------------------------------

_PROBE_TOOL = {
    "type": "function",
    "function": {"name": "probe", "description": "", "parameters": {"type": "object", "properties": {}}},
}
_renders_tools: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def template_renders_tools(session: Any) -> bool:
    """Whether the model's chat template shows ``tools`` to the model at all (Olmo-3 Instruct templates do; Think
    templates and plain ChatML ones do not, and offering tools there would only confuse the model). Asked once."""
    template = session.template
    known = _renders_tools.get(template)
    if known is None:
        messages = [{"role": "user", "content": "hi"}]
        try:
            with_tools = template.render_text(messages, add_generation_prompt=True, tools=[_PROBE_TOOL])
            without = template.render_text(messages, add_generation_prompt=True, tools=None)
            known = with_tools != without and "probe" in with_tools
        except ValueError:  # TemplateError: a template that refuses tools
            known = False
        _renders_tools[template] = known
        if not known:
            log.info("the chat template does not render tools; tools are not offered with this model")
    return known


def offer(session: Any, runner: ToolRunner | None, should_stop: Callable[[], bool]) -> list[dict[str, Any]] | None:
    """Set ``session.tools`` for this turn: the runner's tools if the template can show them, else None."""
    tools = None
    if runner is not None and template_renders_tools(session):
        tools = runner.definitions(should_stop) or None
    session.tools = tools
    return tools


# --- hiding the calls while they stream -------------------------------------------------------------------------


class CallTextFilter:
    """Passes streamed answer text through until ``<function_calls>``; from there on text is held (the calls
    become cards, not text). ``held`` is what was kept back, for when the block turns out not to be a call."""

    def __init__(self) -> None:
        self.held = ""
        self._in_calls = False

    def feed(self, text: str) -> str:
        if self._in_calls:
            self.held += text
            return ""
        buf = self.held + text
        i = buf.find(OPEN_TAG)
        if i >= 0:
            self._in_calls = True
            self.held = buf[i:]
            return buf[:i]
        keep = next((k for k in range(min(len(OPEN_TAG) - 1, len(buf)), 0, -1) if buf.endswith(OPEN_TAG[:k])), 0)
        self.held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep]


def split_calls(node: Any) -> tuple[str, str, tuple[FunctionCall, ...]] | None:
    """A reply's raw text split around its calls: ``(raw before the block, calls verbatim, parsed calls)``, or None
    when it made none. Only the answer is searched (not a Think reply's reasoning). Raises ToolCallParseError."""
    raw, head = node.raw, 0
    if node.think:
        close = raw.find(THINK_CLOSE)
        if close < 0:
            return None  # the reply ended inside its reasoning
        head = close + len(THINK_CLOSE)
    answer = raw[head:]
    if OPEN_TAG not in answer and CLOSE_TAG not in answer:
        return None
    reply = parse_reply(answer)
    if reply.raw_calls is None:
        return None
    if reply.trailing.strip():
        log.info("text after </function_calls> is left out of the history: %r", reply.trailing[:80])
    return raw[:head] + reply.content, reply.raw_calls, reply.calls


# --- the loop --------------------------------------------------------------------------------------------------


def _tool_data(
    name: str, server: str, arguments: dict[str, Any], result: ToolResult, *, declined: bool, elapsed: float
) -> dict[str, Any]:
    """What an environment message keeps about its call (the store's ``tool`` column, the card's data)."""
    return {
        "name": name,
        "server": server,
        "arguments": arguments,
        "is_error": result.is_error,
        "cancelled": result.cancelled,
        "timed_out": result.timed_out,
        "cut_chars": result.cut_chars,
        "declined": declined,
        "elapsed_s": round(elapsed, 3),
    }


def _stopped_result(name: str, server: str, *, ran: bool) -> ToolResult:
    text = "Error: the call was cancelled by the user." if ran else "Error: not run: the user stopped the turn."
    return ToolResult(text, True, cancelled=True, name=name, server=server)


def _wait_for(handle: CallHandle, name: str, server: str, should_stop: Callable[[], bool]) -> tuple[ToolResult, bool]:
    """The call's result, waiting in short steps; on stop, cancel it and wait a little for the server to agree.
    Returns ``(result, stopped)``."""
    pause = threading.Event()
    while not handle.done():
        if should_stop():
            handle.cancel()
            try:
                return handle.result(CANCEL_GRACE_S), True
            except TimeoutError:
                log.warning("%s did not stop within %.0f s after cancelling", name, CANCEL_GRACE_S)
                return _stopped_result(name, server, ran=True), True
        pause.wait(POLL_S)
    return handle.result(), False


@dataclass
class _Round:
    number: int
    reply: TranscriptMessage
    finished: TurnFinished


class ToolTurn:
    """One turn with tools; iterate :meth:`events` (see the module docstring)."""

    def __init__(
        self,
        session: Any,
        runner: ToolRunner,
        desk: ConsentDesk,
        *,
        should_stop: Callable[[], bool],
        sampling: dict[str, Any] | None = None,
        overflow: OverflowPolicy = "error",
        logits_processors: list[Any] | None = None,
        overflow_error: type[Exception] | tuple[type[Exception], ...] = (),
    ) -> None:
        self.session = session
        self.overflow_error = overflow_error
        self.runner = runner
        self.desk = desk
        self.stop = should_stop
        self.sampling = sampling
        self.overflow = overflow
        self.logits_processors = logits_processors

    def events(self, first: Iterator[Event]) -> Iterator[Event]:
        """The events of the whole turn, starting with ``first`` (the session's send/regenerate/edit)."""
        events, number, last = first, 1, None
        while True:
            finished: TurnFinished | None = None
            text = CallTextFilter()
            for event in events:
                if isinstance(event, TurnFinished):
                    finished = event
                elif isinstance(event, TextDelta) and event.channel == "answer":
                    shown = text.feed(event.text)
                    if shown:
                        yield dataclasses.replace(event, text=shown)
                else:
                    yield event
            if finished is None:
                return
            done = yield from self._after_round(finished, text, number, last)
            if done is None:
                return
            last = done
            following = yield from self._next_round(number, done)
            if following is None:
                return
            events, number = following, number + 1

    def _after_round(
        self, finished: TurnFinished, text: CallTextFilter, number: int, last: _Round | None
    ) -> Generator[Event, None, _Round | None]:
        """Handle a round's end: the final reply, or its calls run. Returns the round (calls ran) or None (done)."""
        s = self.session
        reply = finished.reply
        if reply is None:  # stopped before a later round's first token: the turn ends with the last reply
            yield self._finish(finished, last)
            return None
        split: tuple[str, str, tuple[FunctionCall, ...]] | None = None
        problem: str | None = None
        if finished.stats.finish_reason == "stop" and s.tools:
            try:
                split = split_calls(s.nodes[reply.id])
            except ToolCallParseError as e:
                problem = str(e)
        if split is None:
            if text.held:  # the block was not a call after all (or could not be read): it is part of the text
                yield TextDelta(text=text.held, channel="answer")
            if problem is None:
                yield finished
                return None
        if split is not None:
            raw, calls_text, calls = split
            parsed = [{"name": c.name, "arguments": dict(c.arguments)} for c in calls]
            message = s.set_calls(reply.id, raw, calls_text, {"calls": parsed, "raw_calls": calls_text})
            yield ToolRoundFinished(
                reply=message, stats=finished.stats, round=number, calls=tuple(parsed), state=s.to_state()
            )
            this = _Round(number, message, finished)
            stopped = yield from self.run_calls(number, message.id, calls)
        else:
            assert problem is not None
            message = reply
            yield ToolRoundFinished(
                reply=message, stats=finished.stats, round=number, calls=(), state=s.to_state(), parse_error=problem
            )
            this = _Round(number, message, finished)
            result = error_result(f"could not read the call: {problem}")
            yield self._record(number, reply.id, 0, "", "", {}, result, declined=False, elapsed=0.0)
            stopped = False
        if stopped or number > self.runner.max_rounds:
            yield self._finish(finished, this, cancelled=stopped)
            return None
        return this

    def run_calls(self, number: int, reply_id: str, calls: tuple[FunctionCall, ...]) -> Generator[Event, None, bool]:
        """Run round ``number``'s calls (made by reply ``reply_id``) in order, each answered by an environment turn
        (``session.add_environment``; the remote engine runs its server's calls here too). True if stopped."""
        parent, stopped = reply_id, False
        over = number > self.runner.max_rounds
        for index, call in enumerate(calls):
            call_id = new_id()
            info = self.runner.describe(call.name)
            server = info.server if info is not None else ""
            arguments = dict(call.arguments)
            declined, started = False, time.monotonic()
            if over:
                limit = self.runner.max_rounds
                result = error_result(f"not run: this turn reached its limit of {limit} rounds of tool calls")
            elif stopped or self.stop():
                stopped = True
                result = _stopped_result(call.name, server, ran=False)
            else:
                decision: Decision | None = "allow"
                if info is not None and self.runner.needs_consent(call.name):
                    request_id = self.desk.open()
                    yield ToolCallRequested(
                        request_id=request_id,
                        call_id=call_id,
                        round=number,
                        index=index,
                        name=call.name,
                        server=server,
                        arguments=arguments,
                        description=info.description,
                    )
                    decision = self.desk.wait(request_id, self.stop)
                if decision is None:
                    stopped = True
                    result = _stopped_result(call.name, server, ran=False)
                elif decision == "deny":
                    from ..tools.info import declined_result

                    declined, result = True, declined_result(call.name, server)
                else:
                    yield ToolCallStarted(
                        call_id=call_id,
                        round=number,
                        index=index,
                        name=call.name,
                        server=server,
                        arguments=arguments,
                    )
                    started = time.monotonic()
                    result, stopped = self._call(call, server)
            elapsed = time.monotonic() - started
            event = self._record(
                number, parent, index, call.name, server, arguments, result, declined, elapsed, call_id
            )
            parent = call_id
            yield event
        return stopped

    def _call(self, call: FunctionCall, server: str) -> tuple[ToolResult, bool]:
        try:
            handle = self.runner.start(call.name, dict(call.arguments))
        except Exception as e:  # a result, always: the model must get an answer to its call
            log.exception("starting %s failed", call.name)
            return error_result(f"calling {call.name} failed: {e}", name=call.name, server=server), False
        return _wait_for(handle, call.name, server, self.stop)

    def _record(
        self,
        number: int,
        parent: str,
        index: int,
        name: str,
        server: str,
        arguments: dict[str, Any],
        result: ToolResult,
        declined: bool,
        elapsed: float,
        call_id: str | None = None,
    ) -> ToolCallFinished:
        data = _tool_data(name, server, arguments, result, declined=declined, elapsed=elapsed)
        if not name:
            data["parse_error"] = True
        message = self.session.add_environment(parent, result.text, tool=data, node_id=call_id)
        return ToolCallFinished(
            call_id=message.id,
            parent_id=parent,
            round=number,
            index=index,
            name=name,
            server=server,
            arguments=arguments,
            result=result.to_dict(),
            message=message,
            declined=declined,
            elapsed_s=data["elapsed_s"],
        )

    def _next_round(self, number: int, this: _Round) -> Generator[Event, None, Iterator[Event] | None]:
        """Start generating after the results; None when the turn cannot go on (the context is full)."""
        s = self.session
        reply_id = new_id()
        leaf = s.active_path()[-1]
        try:
            events: Iterator[Event] = s.continue_turn(
                reply_id=reply_id,
                sampling=self.sampling,
                overflow=self.overflow,
                should_stop=self.stop,
                logits_processors=self.logits_processors,
            )
        except self.overflow_error as e:
            log.info("the tool turn stops: %s", e)
            yield self._finish(this.finished, this, reason="context")
            return None
        yield ToolRoundStarted(reply_id=reply_id, parent_id=leaf.id, round=number + 1)
        return events

    def _finish(
        self, finished: TurnFinished, last: _Round | None, *, cancelled: bool = False, reason: str | None = None
    ) -> TurnFinished:
        """The turn's end when its last round made no new reply: the last reply (with calls) stands for it."""
        if last is None:
            return finished
        s = self.session
        stats = finished.stats
        if cancelled or finished.stats.finish_reason == "cancelled":
            stats = dataclasses.replace(stats, finish_reason="cancelled")
        elif reason == "context":
            stats = dataclasses.replace(stats, finish_reason="context")
        stats = dataclasses.replace(stats, context_used=len(s.tokens))
        reply = next((m for m in s.messages if m.id == last.reply.id), last.reply)
        return TurnFinished(stats=stats, reply=reply, messages=s.messages, state=s.to_state())


def run_tool_turn(
    session: Any,
    first: Iterator[Event],
    runner: ToolRunner,
    desk: ConsentDesk,
    *,
    should_stop: Callable[[], bool],
    sampling: dict[str, Any] | None = None,
    overflow: OverflowPolicy = "error",
    logits_processors: list[Any] | None = None,
    overflow_error: type[Exception] | tuple[type[Exception], ...] = (),
) -> Iterator[Event]:
    """The events of a turn with tools (``session.tools`` already offered, see :func:`offer`). ``overflow_error``:
    what the session raises when a later round would not fit (``ContextOverflowError``; the turn then ends)."""
    turn = ToolTurn(
        session,
        runner,
        desk,
        should_stop=should_stop,
        sampling=sampling,
        overflow=overflow,
        logits_processors=logits_processors,
        overflow_error=overflow_error,
    )
    return turn.events(first)
