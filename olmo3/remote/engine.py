"""The remote engine: the local engine's job methods and events, over a remote ``olmo3 serve``. MLX-free, Qt-free.

:class:`RemoteEngine` stands where :class:`olmo3.chat.engine.Engine` stands for the app (``desktop.bridge`` picks
one): its job methods are thread-safe and return a job id at once; one worker thread of its own (``olmo3-remote``)
runs the jobs in order and reports through ``on_event(event)`` with the same ``olmo3.chat.events`` dataclasses.

* ``load_model`` connects: ``/health`` and ``/v1/olmo/info`` become a ``ModelLoaded`` carrying the served model's
  :class:`~olmo3.model.modelinfo.ModelInfo` and context.
* Conversations are :class:`~olmo3.chat.tree.ConversationTree`\\ s kept here (the store's ids, branches, edits,
  regenerations, as the local engine keeps them). Every turn sends the active path's messages to
  ``/v1/chat/completions`` (streamed); the server finds the cached conversation the request continues, so a
  follow-up only prefills what is new: the caches live on the server. ``TextDelta``\\ s follow the stream's
  ``content`` and ``reasoning_content``; ``TurnFinished`` carries stats from the server's ``usage`` (its
  ``cached_tokens`` show the reuse) and this side's clock.
* ``cancel`` cuts the running stream (the server cancels the job when its client leaves) and drops queued jobs.
* Failures are events, never exceptions: an unreachable server, a refused key (401), a server that is down (503,
  with ``/health``'s reason), a stream that breaks off or is not what an Olmo server sends: one ``JobFailed`` line,
  the new user message taken back out of the tree (the window keeps it), the engine ready for the next job. A
  prompt that does not fit (400 ``context_length_exceeded``) is a ``ContextOverflow``; with ``drop_oldest`` the
  oldest turns are left out of the request until it fits.

* Tools: a turn given the app's tools (a ``ToolRunner``) offers them to the server as OpenAI ``tools``; the calls
  the server returns run here, on this computer's MCP servers, with the local engine's events, consent
  (``answer_tool_call``) and limits, and the turn goes on in rounds (``olmo3.remote.tool_rounds``).

* The thinking budget goes with every request (``thinking_budget``, olmo3 serve's extension) when the server lists it
  in ``/v1/olmo/info``'s ``capabilities``, and the reply's provenance records it.

What a remote server does not do here: KV quantization and memory budgets (the server's own). Tokens are not known
here, so replies carry no token ids; the next local turn re-reads the history.
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..chat.events import (
    BranchSwitched,
    ContextOverflow,
    ConversationClosed,
    ConversationOpened,
    Event,
    JobCancelled,
    JobFailed,
    JobStarted,
    ModelLoaded,
    ModelUnloaded,
    TextDelta,
    ToolRoundFinished,
    ToolRoundStarted,
    TurnFinished,
)
from ..chat.sampling import Sampling
from ..chat.tool_turns import ConsentDesk, ToolRunner
from ..chat.transcript import (
    BranchKind,
    FinishReason,
    OverflowPolicy,
    Provenance,
    Reconcile,
    TranscriptState,
    TurnStats,
)
from ..chat.tree import Node
from ..ids import check_conv_id, new_id
from ..model.modelinfo import ModelInfo
from ..tools.calls import FunctionCall
from .client import RemoteError, ServerAddress, ServerClient, ServerInfo, one_line
from .tool_rounds import mark_calls, offer, read_calls, run_calls
from .turns import (
    RemoteConversation,
    TurnOptions,
    TurnReader,
    finish_stats,
    model_info_from_dict,
    overflow_event,
    provenance,
    request_body,
)

__all__ = ["RemoteEngine"]

log = logging.getLogger(__name__)

Finish = FinishReason | None


class _Job:
    __slots__ = ("conv_id", "fn", "id", "kind")

    def __init__(self, job_id: int, kind: str, conv_id: str, fn: Callable[[_Job], None]) -> None:
        self.id, self.kind, self.conv_id, self.fn = job_id, kind, conv_id, fn


class RemoteEngine:
    """See the module docstring. ``first_job_id``: where job ids start (the bridge keeps them apart from the local
    engine's, so a late event of one is never taken for the other's)."""

    def __init__(
        self,
        on_event: Callable[[Event], None] | None,
        address: ServerAddress,
        api_key: str | None = None,
        *,
        first_job_id: int = 1,
    ) -> None:
        self.on_event = on_event or (lambda e: None)
        self.client = ServerClient(address, api_key)
        self.address = address
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._ids = itertools.count(first_job_id)
        self._id_lock = threading.Lock()
        self._last_submitted = 0
        self._cancel_upto = 0
        self._stream: Any = None  # the ChatStream being read (cancel closes it)
        self._stream_lock = threading.Lock()
        self._done: set[int] = set()
        self._done_cv = threading.Condition()
        self._thread: threading.Thread | None = None
        # Worker-thread state:
        self.server: ServerInfo | None = None
        self.info: ModelInfo | None = None
        self.context_tokens = 0
        self.conversations: dict[str, RemoteConversation] = {}
        self.kv_bits: int | None = None  # the server's business
        self.session_options: dict[str, Any] = {}
        self.consent = ConsentDesk()  # tool calls waiting for the person's yes or no

    # ------------------------------------------------------------------ thread control (any thread)
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run_jobs, name="olmo3-remote", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Cut the running stream, drop queued jobs and stop the thread. True if it stopped in time."""
        if self._thread is None:
            return True
        self.cancel()
        self._queue.put(None)
        self._thread.join(timeout)
        stopped = not self._thread.is_alive()
        if stopped:
            self._thread = None
        return stopped

    def cancel(self) -> None:
        """Stop the running turn (its stream is cut at once) and any queued ones."""
        self._cancel_upto = self._last_submitted
        with self._stream_lock:
            if self._stream is not None:
                self._stream.close()

    def answer_tool_call(self, request_id: int, decision: str) -> bool:
        """Answer a ``ToolCallRequested``: "allow" (or "once"/"always") or "deny" (any thread). False when the call
        no longer waits (its turn was stopped)."""
        return self.consent.answer(request_id, decision)

    def wait(self, job_id: int, timeout: float | None = None) -> bool:
        """Block until job ``job_id`` has finished (for tests and scripts)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done_cv:
            while job_id not in self._done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._done_cv.wait(left)
        return True

    # ------------------------------------------------------------------ jobs (any thread)
    def load_model(self, path: Any = None, *, context_tokens: int | None = None, force: bool = False) -> int:
        """Connect: ask the server what it serves (``path`` and the context are the server's; ignored)."""
        return self._submit("load_model", "", self._connect)

    def unload_model(self) -> int:
        return self._submit("unload_model", "", self._disconnect)

    def open_conversation(
        self,
        conv_id: str,
        *,
        system_prompt: str | None = None,
        state: TranscriptState | None = None,
        sampling: dict[str, Any] | None = None,
    ) -> int:
        check_conv_id(conv_id)
        return self._submit("open", conv_id, lambda job: self._open(job, system_prompt, state, sampling))

    def send(
        self,
        conv_id: str,
        text: str,
        *,
        prompt_text: str | None = None,
        message_id: str | None = None,
        reply_id: str | None = None,
        sampling: dict[str, Any] | None = None,
        overflow: OverflowPolicy = "error",
        tools: ToolRunner | None = None,
    ) -> int:
        check_conv_id(conv_id)

        def run(job: _Job) -> None:
            conv = self._conversation(job)
            user = conv.new_user_node(text, prompt_text=prompt_text, message_id=message_id)
            self._turn(job, conv, user, True, reply_id, sampling, overflow, tools)

        return self._submit("send", conv_id, run)

    def regenerate(
        self,
        conv_id: str,
        *,
        reply_id: str | None = None,
        sampling: dict[str, Any] | None = None,
        overflow: OverflowPolicy = "error",
        tools: ToolRunner | None = None,
    ) -> int:
        check_conv_id(conv_id)

        def run(job: _Job) -> None:
            conv = self._conversation(job)
            self._turn(job, conv, conv.last_user_node(), False, reply_id, sampling, overflow, tools)

        return self._submit("regenerate", conv_id, run)

    def edit(
        self,
        conv_id: str,
        user_turn_index: int,
        text: str,
        *,
        prompt_text: str | None = None,
        message_id: str | None = None,
        reply_id: str | None = None,
        sampling: dict[str, Any] | None = None,
        overflow: OverflowPolicy = "error",
        tools: ToolRunner | None = None,
    ) -> int:
        check_conv_id(conv_id)

        def run(job: _Job) -> None:
            conv = self._conversation(job)
            user = conv.new_user_node(text, prompt_text=prompt_text, message_id=message_id, replacing=user_turn_index)
            self._turn(job, conv, user, True, reply_id, sampling, overflow, tools)

        return self._submit("edit", conv_id, run)

    def switch_branch(self, conv_id: str, user_turn_index: int, branch_index: int, which: BranchKind = "reply") -> int:
        check_conv_id(conv_id)

        def run(job: _Job) -> None:
            conv = self._conversation(job)
            conv.switch_branch(user_turn_index, branch_index, which)
            self._emit(
                BranchSwitched(
                    job_id=job.id, conv_id=job.conv_id, which=which, messages=conv.messages, state=self._state(conv)
                )
            )

        return self._submit("switch_branch", conv_id, run)

    def set_system_prompt(self, conv_id: str, system_prompt: str | None) -> int:
        check_conv_id(conv_id)

        def run(job: _Job) -> None:
            self._conversation(job).system_prompt = system_prompt or None

        return self._submit("set_system_prompt", conv_id, run)

    def close_conversation(self, conv_id: str, *, delete_cache: bool = False) -> int:
        check_conv_id(conv_id)

        def run(job: _Job) -> None:
            self.conversations.pop(job.conv_id, None)
            self._emit(ConversationClosed(job_id=job.id, conv_id=job.conv_id))

        return self._submit("close", conv_id, run)

    # ------------------------------------------------------------------ the worker thread
    def _submit(self, kind: str, conv_id: str, fn: Callable[[_Job], None]) -> int:
        with self._id_lock:
            job_id = next(self._ids)
            self._last_submitted = job_id
            self._queue.put(_Job(job_id, kind, conv_id, fn))
        return job_id

    def _emit(self, event: Event) -> None:
        try:
            self.on_event(event)
        except Exception:  # a broken listener must not stop the engine
            log.exception("event listener failed on %r", type(event).__name__)

    def _stop_requested(self, job: _Job) -> bool:
        return job.id <= self._cancel_upto

    def _run_jobs(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._emit(JobStarted(job_id=job.id, conv_id=job.conv_id, kind=job.kind))
            try:
                job.fn(job)
            except RemoteError as e:
                log.warning("remote job %s (%s) failed: %s", job.id, job.kind, e.message)
                self._emit(JobFailed(job_id=job.id, conv_id=job.conv_id, message=e.message, error="RemoteError"))
            except Exception as e:  # every failure becomes an event; the thread lives on
                log.exception("remote job %s (%s) failed", job.id, job.kind)
                message = one_line(e) or type(e).__name__
                self._emit(JobFailed(job_id=job.id, conv_id=job.conv_id, message=message, error=type(e).__name__))
            finally:
                with self._done_cv:
                    self._done.add(job.id)
                    self._done_cv.notify_all()

    def _connect(self, job: _Job) -> None:
        t0 = time.perf_counter()
        server = self.client.info()
        self.server = server
        self.info = model_info_from_dict(server.info, server.model_id)
        self.context_tokens = server.context_tokens or self.info.max_position_embeddings
        self._emit(
            ModelLoaded(
                job_id=job.id, info=self.info, load_s=time.perf_counter() - t0, context_tokens=self.context_tokens
            )
        )

    def _disconnect(self, job: _Job) -> None:
        self.server = self.info = None
        self.context_tokens = 0
        self._emit(ModelUnloaded(job_id=job.id))

    def _require_server(self) -> ServerInfo:
        if self.server is None:
            raise RemoteError(f"not connected to {self.address.label}: connect to the server first")
        return self.server

    def _conversation(self, job: _Job) -> RemoteConversation:
        conv = self.conversations.get(job.conv_id)
        if conv is None:
            raise KeyError(f"conversation {job.conv_id} is not open")
        return conv

    def _open(
        self, job: _Job, system_prompt: str | None, state: TranscriptState | None, sampling: dict[str, Any] | None
    ) -> None:
        self._require_server()
        conv = self.conversations.get(job.conv_id)
        if conv is None or state is not None:
            conv = RemoteConversation(system_prompt, Sampling().merged(sampling))
            if state is not None:
                conv.load(state)
                if system_prompt is not None:
                    conv.system_prompt = system_prompt or None
            self.conversations[job.conv_id] = conv
        elif sampling:
            conv.sampling = conv.sampling.merged(sampling)
        self._emit(
            ConversationOpened(
                job_id=job.id,
                conv_id=job.conv_id,
                messages=conv.messages,
                context_used=conv.context_used,
                context_limit=self.context_tokens,
                cache_state="cold",  # nothing is cached on this computer: the server keeps the caches
            )
        )

    def _state(self, conv: RemoteConversation) -> TranscriptState:
        return conv.state(self.info.fingerprint if self.info is not None else "")

    # ------------------------------------------------------------------ a turn
    def _turn(
        self,
        job: _Job,
        conv: RemoteConversation,
        user: Node,
        new_user: bool,
        reply_id: str | None,
        sampling: dict[str, Any] | None,
        overflow: OverflowPolicy,
        tools: ToolRunner | None,
    ) -> None:
        """One turn: a request and its streamed reply; with tools, more rounds after the calls ran (see
        ``olmo3.remote.tool_rounds``). A failure before the first reply takes a new user message back out."""
        server = self._require_server()
        s = conv.sampling.merged(sampling)
        s.validate()
        if reply_id is not None and (reply_id in conv.nodes or reply_id == user.id):
            raise ValueError(f"message id {reply_id!r} is already used in this conversation")
        opts = TurnOptions(s, random.getrandbits(31) if s.seed is None else s.seed, s.keep_reasoning is not False)
        if "thinking_budget" in server.capabilities:
            opts.thinking_budget = s.thinking_budget
        previous_active = conv._active_child(user.parent) if new_user else None
        if new_user:
            conv._add(user)
        stop = lambda: self._stop_requested(job)  # noqa: E731
        emit = lambda e: self._emit(replace(e, job_id=job.id, conv_id=job.conv_id))  # noqa: E731
        try:
            opts.tools = offer(tools, stop)
            first = self._round(job, conv, user, opts, overflow)
        except BaseException:
            conv.discard(user, new_user, previous_active)
            raise
        if isinstance(first, ContextOverflow):
            conv.discard(user, new_user, previous_active)
            self._emit(first)
            return
        reader, t0, cut = first
        if cut and not reader.text_seen:
            conv.discard(user, new_user, previous_active)
            stats = finish_stats(reader, t0, "cancelled", "fresh", conv.context_used, self.context_tokens, opts.seed, 0)
            self._emit(self._finished(job, conv, stats, None))
            self._emit(JobCancelled(job_id=job.id, conv_id=job.conv_id))
            return
        number, leaf = 1, user
        while True:
            reply, calls = self._reply(conv, leaf, reply_id, reader, t0, cut, opts)
            if not calls or tools is None:
                self._emit(self._finished(job, conv, reply.stats, reply))
                return
            message = conv._message(reply, conv._turn_index(reply))
            assert reply.stats is not None
            self._emit(
                ToolRoundFinished(
                    job_id=job.id,
                    conv_id=job.conv_id,
                    reply=message,
                    stats=reply.stats,
                    round=number,
                    calls=tuple(reply.tool["calls"]) if reply.tool else (),
                    state=self._state(conv),
                )
            )
            stopped = run_calls(conv, tools, self.consent, stop, number, reply.id, calls, emit)
            if stopped or number > tools.max_rounds:
                self._emit(self._finished(job, conv, reply.stats, reply, "cancelled" if stopped else None))
                return
            leaf, reply_id, number = conv.active_path()[-1], new_id(), number + 1
            self._emit(
                ToolRoundStarted(job_id=job.id, conv_id=job.conv_id, reply_id=reply_id, parent_id=leaf.id, round=number)
            )
            following = self._round(job, conv, leaf, opts, overflow)
            if isinstance(following, ContextOverflow):  # the results do not fit: the turn ends with the last reply
                self._emit(self._finished(job, conv, reply.stats, reply, "context"))
                return
            reader, t0, cut = following
            if cut and not reader.text_seen:
                self._emit(self._finished(job, conv, reply.stats, reply, "cancelled"))
                return

    def _round(
        self, job: _Job, conv: RemoteConversation, leaf: Node, opts: TurnOptions, overflow: OverflowPolicy
    ) -> tuple[TurnReader, float, bool] | ContextOverflow:
        """Send the conversation up to ``leaf`` and read the streamed reply: ``(reader, t0, cut)`` (``cut``: the
        person stopped it), or the ContextOverflow that it does not fit (``drop_oldest``: after leaving out turns)."""
        server = self._require_server()
        t0 = time.perf_counter()
        reader = TurnReader()
        dropped = 0
        try:
            while True:
                if self._stop_requested(job):
                    raise RemoteError("cancelled", code="cancelled")
                path = conv._path_to(leaf)
                args = (server.model_id, conv.system_prompt, path, conv.drop_turns, opts.s, opts.seed, opts.keep)
                body = request_body(*args, opts.tools, opts.thinking_budget)
                try:
                    stream = self.client.stream_chat(body, opened=lambda st: self._watch(job, st))
                    break
                except RemoteError as e:
                    droppable = sum(1 for n in path if n.role == "user") - 1 - conv.drop_turns
                    if e.code != "context_length_exceeded":
                        raise
                    if overflow == "drop_oldest" and droppable > 0:
                        conv.drop_turns += 1
                        dropped += 1
                        continue
                    conv.drop_turns -= dropped
                    return overflow_event(job.id, job.conv_id, e, droppable, opts.s.max_tokens)
                finally:
                    self._watch(job, None)
            self._watch(job, stream)
            try:
                for chunk in stream.chunks():
                    for channel, text in reader.feed(chunk, self.address.label):
                        self._emit(TextDelta(job_id=job.id, conv_id=job.conv_id, text=text, channel=channel))
            finally:
                self._watch(job, None)
                stream.release()
            cut = stream.closed_by_us and reader.finish is None
        except RemoteError as e:
            if e.code != "cancelled":
                conv.drop_turns -= dropped
                raise
            cut = True
        except BaseException:
            conv.drop_turns -= dropped
            raise
        if not cut and reader.finish is None:
            raise RemoteError(f"{self.address.label} ended the reply without saying how it finished.")
        reader.dropped = dropped
        return reader, t0, cut

    def _reply(
        self,
        conv: RemoteConversation,
        leaf: Node,
        reply_id: str | None,
        reader: TurnReader,
        t0: float,
        cut: bool,
        opts: TurnOptions,
    ) -> tuple[Node, tuple[FunctionCall, ...]]:
        """The streamed reply as a node under ``leaf`` (added to the tree), and the calls it made."""
        calls = read_calls(reader, self.address.label) if opts.tools and not cut else ()
        finish: FinishReason = "cancelled" if cut else reader.finish or "stop"
        users_before = sum(1 for n in conv._path_to(leaf) if n.role == "user")
        how: Reconcile = "append" if reader.cached_tokens > 0 else ("fresh" if users_before == 1 else "reprefill")
        if reader.prompt_tokens or reader.completion_tokens:
            conv.context_used = reader.prompt_tokens + reader.completion_tokens
        stats = finish_stats(reader, t0, finish, how, conv.context_used, self.context_tokens, opts.seed, reader.dropped)
        reply = reader.reply(conv.fresh_id(reply_id), leaf.id, stats, self._provenance(opts, how))
        if calls:
            mark_calls(reply, calls)
        conv._add(reply)
        return reply, calls

    def _finished(
        self, job: _Job, conv: RemoteConversation, stats: TurnStats | None, reply: Node | None, finish: Finish = None
    ) -> TurnFinished:
        """The turn's end: ``reply`` (the last round's; None: nothing came) stands for it, ``finish`` overrides."""
        assert stats is not None
        stats = replace(stats, finish_reason=finish) if finish is not None else stats
        message = conv._message(reply, conv._turn_index(reply)) if reply is not None else None
        state, messages = self._state(conv), conv.messages
        return TurnFinished(
            job_id=job.id, conv_id=job.conv_id, stats=stats, reply=message, messages=messages, state=state
        )

    def _watch(self, job: _Job, stream: Any) -> None:
        """The stream ``cancel`` cuts (None: none); one opened for a job already stopped is cut at once."""
        with self._stream_lock:
            self._stream = stream
            if stream is not None and self._stop_requested(job):
                stream.close()

    def _provenance(self, opts: TurnOptions, how: Reconcile) -> Provenance:
        assert self.info is not None and self.server is not None
        return provenance(self.info, self.server, self.context_tokens, opts, how)
