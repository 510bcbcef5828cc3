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

What a remote server does not do here: tools (the app's MCP tools run on this computer; a remote turn is sent
without them), a thinking budget (the server's API has no such setting), KV quantization and memory budgets (the
server's own). Tokens are not known here, so replies carry no token ids; the next local turn re-reads the history.
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..chat.events import (
    BranchSwitched,
    ConversationClosed,
    ConversationOpened,
    Event,
    JobCancelled,
    JobFailed,
    JobStarted,
    ModelLoaded,
    ModelUnloaded,
    TextDelta,
    TurnFinished,
)
from ..chat.sampling import Sampling
from ..chat.transcript import (
    THINK_CLOSE,
    THINK_OPEN,
    BranchKind,
    FinishReason,
    OverflowPolicy,
    Provenance,
    Reconcile,
    TranscriptState,
)
from ..chat.tree import ConversationTree, Node
from ..model.modelinfo import ModelInfo
from .client import RemoteError, ServerAddress, ServerClient, ServerInfo, one_line
from .turns import TurnReader, finish_stats, model_info_from_dict, overflow_event, request_body

__all__ = ["RemoteEngine"]

log = logging.getLogger(__name__)

_CONV_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class _Conversation(ConversationTree):
    def __init__(self, system_prompt: str | None, sampling: Sampling) -> None:
        super().__init__()
        self.system_prompt = system_prompt or None
        self.sampling = sampling
        self.context_used = 0  # the last turn's prompt + reply, as the server counted them

    def load(self, state: TranscriptState) -> None:
        self.system_prompt = state.system_prompt
        self.drop_turns = state.drop_turns
        self.nodes = {n.id: Node.thaw(n) for n in state.nodes}
        self.root_children = list(state.root_children)
        self.root_active = state.root_active


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
        self.conversations: dict[str, _Conversation] = {}
        self.kv_bits: int | None = None  # the server's business
        self.session_options: dict[str, Any] = {}

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
        return False  # a remote turn runs no tools

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
        _check_conv_id(conv_id)
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
        tools: Any = None,
    ) -> int:
        _check_conv_id(conv_id)

        def run(job: _Job) -> None:
            if not isinstance(text, str) or not text.strip():
                raise ValueError("the message is empty")
            conv = self._conversation(job)
            path = conv.active_path()
            user = Node(
                id=conv.fresh_id(message_id),
                role="user",
                content=text,
                raw=prompt_text if prompt_text else text,
                parent=path[-1].id if path else None,
            )
            self._turn(job, conv, user, True, reply_id, sampling, overflow)

        return self._submit("send", conv_id, run)

    def regenerate(
        self,
        conv_id: str,
        *,
        reply_id: str | None = None,
        sampling: dict[str, Any] | None = None,
        overflow: OverflowPolicy = "error",
        tools: Any = None,
    ) -> int:
        _check_conv_id(conv_id)

        def run(job: _Job) -> None:
            conv = self._conversation(job)
            users = conv.user_nodes()
            if not users:
                raise ValueError("nothing to regenerate: the conversation has no user message")
            self._turn(job, conv, users[-1], False, reply_id, sampling, overflow)

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
        tools: Any = None,
    ) -> int:
        _check_conv_id(conv_id)

        def run(job: _Job) -> None:
            if not isinstance(text, str) or not text.strip():
                raise ValueError("the message is empty")
            conv = self._conversation(job)
            old = conv.user_node(user_turn_index)
            raw = prompt_text if prompt_text else text
            user = Node(id=conv.fresh_id(message_id), role="user", content=text, raw=raw, parent=old.parent)
            self._turn(job, conv, user, True, reply_id, sampling, overflow)

        return self._submit("edit", conv_id, run)

    def switch_branch(self, conv_id: str, user_turn_index: int, branch_index: int, which: BranchKind = "reply") -> int:
        _check_conv_id(conv_id)

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
        _check_conv_id(conv_id)

        def run(job: _Job) -> None:
            self._conversation(job).system_prompt = system_prompt or None

        return self._submit("set_system_prompt", conv_id, run)

    def close_conversation(self, conv_id: str, *, delete_cache: bool = False) -> int:
        _check_conv_id(conv_id)

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

    def _conversation(self, job: _Job) -> _Conversation:
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
            conv = _Conversation(system_prompt, Sampling().merged(sampling))
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

    def _state(self, conv: _Conversation) -> TranscriptState:
        """The tree as the store keeps it; no token ids (the server's), so a local model re-reads the history."""
        return TranscriptState(
            system_prompt=conv.system_prompt,
            drop_turns=conv.drop_turns,
            root_children=tuple(conv.root_children),
            root_active=conv.root_active,
            nodes=tuple(n.freeze() for n in conv.nodes.values()),
            tokens=(),
            model_fingerprint=self.info.fingerprint if self.info is not None else "",
            template_hash="",
        )

    # ------------------------------------------------------------------ a turn
    def _turn(
        self,
        job: _Job,
        conv: _Conversation,
        user: Node,
        new_user: bool,
        reply_id: str | None,
        sampling: dict[str, Any] | None,
        overflow: OverflowPolicy,
    ) -> None:
        server = self._require_server()
        s = conv.sampling.merged(sampling)
        s.validate()
        if reply_id is not None and (reply_id in conv.nodes or reply_id == user.id):
            raise ValueError(f"message id {reply_id!r} is already used in this conversation")
        keep = s.keep_reasoning is not False
        seed = s.seed if s.seed is not None else random.getrandbits(31)
        previous_active = conv._active_child(user.parent) if new_user else None
        if new_user:
            conv._add(user)
        t0 = time.perf_counter()
        dropped = 0
        reader = TurnReader()
        cut = False  # the person stopped the turn
        try:
            while True:
                if self._stop_requested(job):
                    raise RemoteError("cancelled", code="cancelled")
                path = conv._path_to(user)
                body = request_body(server.model_id, conv.system_prompt, path, conv.drop_turns, s, seed, keep)
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
                    self._discard(conv, user, new_user, previous_active)
                    self._emit(overflow_event(job.id, job.conv_id, e, droppable, s.max_tokens))
                    return
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
                self._discard(conv, user, new_user, previous_active)
                raise
            cut = True
        except BaseException:
            conv.drop_turns -= dropped
            self._discard(conv, user, new_user, previous_active)
            raise
        if not cut and reader.finish is None:
            self._discard(conv, user, new_user, previous_active)
            raise RemoteError(f"{self.address.label} ended the reply without saying how it finished.")
        finish: FinishReason = "cancelled" if cut else reader.finish or "stop"
        if cut and not reader.text_seen:
            self._discard(conv, user, new_user, previous_active)
            stats = finish_stats(reader, t0, "cancelled", "fresh", conv.context_used, self.context_tokens, seed, 0)
            self._emit(
                TurnFinished(
                    job_id=job.id,
                    conv_id=job.conv_id,
                    stats=stats,
                    reply=None,
                    messages=conv.messages,
                    state=self._state(conv),
                )
            )
            self._emit(JobCancelled(job_id=job.id, conv_id=job.conv_id))
            return
        users_before = sum(1 for n in conv._path_to(user) if n.role == "user")
        how: Reconcile = "append" if reader.cached_tokens > 0 else ("fresh" if users_before == 1 else "reprefill")
        if reader.prompt_tokens or reader.completion_tokens:
            conv.context_used = reader.prompt_tokens + reader.completion_tokens
        stats = finish_stats(reader, t0, finish, how, conv.context_used, self.context_tokens, seed, dropped)
        reasoning = "".join(reader.reasoning) if reader.reasoning else None
        content = "".join(reader.answer)
        reply = Node(
            id=conv.fresh_id(reply_id),
            role="assistant",
            content=content,
            raw=f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{content}" if reasoning is not None else content,
            parent=user.id,
            reasoning=reasoning,
            finish_reason=finish,
            think=reasoning is not None,
            stats=stats,
            provenance=self._provenance(s, seed, keep, how),
        )
        conv._add(reply)
        message = conv._message(reply, users_before - 1)
        self._emit(
            TurnFinished(
                job_id=job.id,
                conv_id=job.conv_id,
                stats=stats,
                reply=message,
                messages=conv.messages,
                state=self._state(conv),
            )
        )

    def _watch(self, job: _Job, stream: Any) -> None:
        """The stream ``cancel`` cuts (None: none); one opened for a job already stopped is cut at once."""
        with self._stream_lock:
            self._stream = stream
            if stream is not None and self._stop_requested(job):
                stream.close()

    def _discard(self, conv: _Conversation, user: Node, new_user: bool, previous_active: str | None) -> None:
        """Take a new user message back out of the tree (its turn failed or was cancelled before any text)."""
        if new_user and user.id in conv.nodes and not conv.nodes[user.id].children:
            conv._remove(user)
            if previous_active is not None and previous_active in conv.nodes:
                conv._set_active(conv.nodes[previous_active])

    def _provenance(self, s: Sampling, seed: int, keep: bool, how: Reconcile) -> Provenance:
        info, server = self.info, self.server
        assert info is not None and server is not None
        return Provenance(
            sampling=replace(s, seed=seed, keep_reasoning=keep, thinking_budget=None),
            seed=seed,
            seed_was_random=s.seed is None,
            model_name=info.name,
            model_repo_id=info.repo_id,
            model_revision=info.revision,
            model_fingerprint=info.fingerprint,
            quantization=dict(info.quantization) if info.quantization else None,
            template_hash="",
            thinking_budget=None,
            keep_reasoning=keep,
            kv_bits=None,
            context_limit=self.context_tokens,
            engine_version=f"olmo3 serve {server.version} at {self.address.label}".replace("  ", " "),
            reconcile=how,
        )


def _check_conv_id(conv_id: str) -> None:
    if not isinstance(conv_id, str) or not _CONV_ID.match(conv_id):
        raise ValueError(f"bad conversation id {conv_id!r}: use letters, digits, '-' or '_'")
