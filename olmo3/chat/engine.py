"""The engine: one long-lived thread that owns MLX, the loaded model and every conversation's KV cache.

MLX (≥ 0.31.2) ties streams to the thread that created them, so loading, prefill and decoding must all
happen on one thread. The GUI and ``olmo3 chat`` submit jobs (thread-safe; each returns a job id at once);
the engine runs them in order and reports through ``on_event(event)``, called on the engine thread.

Many conversations share one memory budget: after each turn the least recently used idle conversations
first lose their turn snapshots, then have their live caches spilled to disk (mlx-lm's
``save_prompt_cache`` format, in the user cache dir). A spilled cache comes back on the next turn if its
file matches the model and the transcript; a corrupt or mismatched file is discarded with a log line and the
turn re-prefilled. ``shutdown`` spills everything, so a follow-up after an app restart is instant too.

Tools: ``send``/``regenerate``/``edit`` take a ``tools`` runner (``olmo3.chat.tool_turns.ToolRunner``, e.g.
``olmo3.tools.runner.HubTools``); the turn then offers them and runs the model's calls (one job, several rounds).
A call that needs consent sends ``ToolCallRequested``; answer it from any thread with ``answer_tool_call``.

The local server (``olmo3.serve``) shares all of this through one stateless entry point, :meth:`Engine.complete`:
a request carries its whole conversation, and ``olmo3.chat.prefix_index`` finds the cached conversation it
continues. Its jobs report to their own listener only (the app's ``on_event`` never sees them), are cancelled by
job id (:meth:`Engine.cancel_job`; the app's ``cancel`` leaves them alone), and its conversations live under ids
the app cannot use (``serve/…``), spilled to ``<cache_dir>/serve/``.

Where the model comes from is the ``loader``'s business (:class:`ModelLoader`): by default this machine's folder;
``olmo3.parallel.cluster.ClusterLoader`` gives rank 0 of a parallel group its part of the model, whose caches
every rank holds a part of (spilling and restoring then involve every rank: ``LeaderModel.spill``/``load_spilled``).

(Over 600 lines: the job queue, the memory pool and the disk tier share state that only the engine thread may
touch; the server's own logic lives in ``prefix_index`` and ``serve_session``.)
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..appinfo import kv_cache_dir
from ..ids import check_conv_id
from ..memory import MemoryBudget, conversation_memory_limit, default_memory_budget, describe_error, memory_budget
from .cachefile import check_cache_file
from .completion import SERVE_PREFIX, CompletionRejected, CompletionRequest, is_serve_id
from .events import (
    BranchSwitched,
    CacheState,
    ContextOverflow,
    ConversationClosed,
    ConversationOpened,
    Event,
    JobCancelled,
    JobFailed,
    JobStarted,
    ModelLoaded,
    ModelUnloaded,
    ModelWontFit,
    TurnFinished,
)
from .loaders import LocalLoader, ModelLoader
from .tool_turns import ConsentDesk, ToolRunner, offer, run_tool_turn

if TYPE_CHECKING:
    from .prefix_index import ServePool
    from .session import ChatSession
from .transcript import BranchKind, CacheStateKind, OverflowPolicy, TranscriptState

log = logging.getLogger(__name__)

CACHE_FORMAT = "olmo-desktop-kv-1"


def default_cache_dir() -> Path:
    return kv_cache_dir()


def record_working_set() -> None:
    """Hand Metal's recommended working set to :mod:`olmo3.memory` (0 where there is none). MLX's thread only."""
    import mlx.core as mx

    from ..memory import set_working_set

    set_working_set(int(mx.device_info().get("max_recommended_working_set_size", 0)))


def _release_thread_mlx_state() -> None:
    """Free this thread's MLX streams and random key while the thread still holds the GIL.

    MLX keeps a per-thread random key (``mx.random.seed`` sets it) in a C++ ``thread_local`` whose destructor
    takes the GIL. Left to the thread's exit, that destructor runs after ``Thread.join`` has returned; if the
    interpreter is finalizing by then (``olmo3 chat`` returning from ``main``), CPython ends the thread with
    ``pthread_exit`` inside a ``noexcept`` destructor and the process dies with "terminate called without an
    active exception" (SIGABRT, exit 134). ``mx.clear_streams()`` resets that key and the thread's streams now,
    on the thread that made them.
    """
    mx = sys.modules.get("mlx.core")
    if mx is not None and hasattr(mx, "clear_streams"):
        try:
            mx.clear_streams()
        except Exception:  # pragma: no cover - best effort at thread exit
            log.debug("mx.clear_streams failed", exc_info=True)


def _cache_meta(s: Any) -> dict[str, str]:
    """What a spilled cache must match to come back: format, weights, transcript."""
    return {
        "format": CACHE_FORMAT,
        "model_fingerprint": s.info.fingerprint,
        "tokens_hash": s.tokens_hash(),
        "n_tokens": str(len(s.tokens)),
    }


class _Job:
    __slots__ = ("conv_id", "fn", "id", "kind")

    def __init__(self, job_id: int, kind: str, conv_id: str, fn: Callable[[_Job], None]):
        self.id, self.kind, self.conv_id, self.fn = job_id, kind, conv_id, fn

    @property
    def serves(self) -> bool:
        """A local-server request: cancelled only by its own id (or at shutdown)."""
        return is_serve_id(self.conv_id)


class Engine:
    """Owns MLX on one thread; see the module docstring."""

    def __init__(
        self,
        on_event: Callable[[Event], None] | None = None,
        *,
        cache_dir: str | Path | None = None,
        memory_budget_bytes: int | None = None,
        memory_limit_bytes: int | None = None,
        kv_bits: int | None = None,
        session_options: dict[str, Any] | None = None,
        logits_processors: list[Any] | None = None,
        loader: ModelLoader | None = None,
    ):
        self.on_event = on_event or (lambda e: None)
        self.loader: ModelLoader = loader or LocalLoader()
        # Logits processors for every turn, on top of the sampling settings' (tests force a reply with one).
        self.logits_processors = list(logits_processors or [])
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._budget = memory_budget_bytes
        self.memory_limit = memory_limit_bytes  # a user's cap on everything (olmo3 --memory-limit)
        self.kv_bits = kv_bits
        self.session_options = dict(session_options or {})
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._ids = itertools.count(1)
        self._id_lock = threading.Lock()
        self._last_submitted = 0
        self._cancel_upto = 0
        self._cancelled: set[int] = set()  # jobs cancelled by id (cancel_job)
        self._stopping = False
        self._listeners: dict[int, Callable[[Event], None]] = {}
        self._done: set[int] = set()
        self._done_cv = threading.Condition()
        self._thread: threading.Thread | None = None
        # Engine-thread state:
        self.model: Any = None
        self.tokenizer: Any = None
        self.info: Any = None
        self.context_tokens = 0  # the loaded model's context (every conversation's limit)
        self._forced = False  # the loaded model was loaded although it won't fit
        self.sessions: dict[str, ChatSession] = {}
        self._last_used: dict[str, float] = {}
        self._busy_conv: str | None = None
        self.consent = ConsentDesk()  # tool calls waiting for the person's yes or no
        self._pool: ServePool | None = None
        self.serve_disk_limit: int | None = None  # bytes of the server's disk tier (None: prefix_index's default)

    # ------------------------------------------------------------------ thread control (any thread)
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="olmo3-engine", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Cancel what runs, spill every cache to disk, stop the thread. True if it stopped in time."""
        if self._thread is None:
            return True
        self._stopping = True  # cancels the server's requests too
        self.cancel()
        self._submit("shutdown", "", lambda job: self._shutdown())
        self._queue.put(None)
        self._thread.join(timeout)
        stopped = not self._thread.is_alive()
        if stopped:
            self._thread = None
        return stopped

    def cancel(self) -> None:
        """Stop the running generation (within one decode step or prefill chunk) and any queued ones.

        The local server's requests are not touched: each is cancelled by its own id (:meth:`cancel_job`)."""
        self._cancel_upto = self._last_submitted

    def answer_tool_call(self, request_id: int, decision: str) -> bool:
        """Answer a ``ToolCallRequested``: "allow" (or "once"/"always") or "deny" (any thread). False when the call
        no longer waits (its turn was stopped)."""
        return self.consent.answer(request_id, decision)

    def cancel_job(self, job_id: int) -> None:
        """Stop job ``job_id`` only: within one decode step or prefill chunk if it runs, before it starts if queued."""
        with self._id_lock:
            if job_id not in self._done:
                self._cancelled.add(job_id)

    def _stop_requested(self, job: _Job) -> bool:
        if job.id in self._cancelled or self._stopping:
            return True
        return job.id <= self._cancel_upto and not job.serves

    def wait(self, job_id: int, timeout: float | None = None) -> bool:
        """Block until job ``job_id`` has finished (for the CLI and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._done_cv:
            while job_id not in self._done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._done_cv.wait(left)
        return True

    # ------------------------------------------------------------------ jobs (any thread)
    def load_model(self, path: str | Path, *, context_tokens: int | None = None, force: bool = False) -> int:
        """Load a model with ``context_tokens`` of context (None: :func:`olmo3.fit.default_context`).

        Weights + KV at that context + runtime are checked against the budget first: a model that won't fit is
        refused with a ``ModelWontFit`` event (the loaded model stays) unless ``force``.
        """
        return self._submit("load_model", "", lambda job: self._load_model(job, Path(path), context_tokens, force))

    def unload_model(self) -> int:
        return self._submit("unload_model", "", self._unload_model)

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
        """A new user message and its reply. ``message_id``/``reply_id``: the store's ids for the two messages
        (with tools, ``reply_id`` is the first reply; later ones are announced by ``ToolRoundStarted``);
        ``prompt_text``: what the model reads instead of ``text`` (attached documents; see ``ChatSession.send``)."""
        check_conv_id(conv_id)
        return self._submit(
            "send",
            conv_id,
            lambda job: self._generate(
                job,
                lambda s, stop: s.send(
                    text,
                    prompt_text=prompt_text,
                    message_id=message_id,
                    reply_id=reply_id,
                    sampling=sampling,
                    overflow=overflow,
                    should_stop=stop,
                    logits_processors=self.logits_processors,
                ),
                tools=tools,
                sampling=sampling,
                overflow=overflow,
            ),
        )

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
        return self._submit(
            "regenerate",
            conv_id,
            lambda job: self._generate(
                job,
                lambda s, stop: s.regenerate(
                    reply_id=reply_id,
                    sampling=sampling,
                    overflow=overflow,
                    should_stop=stop,
                    logits_processors=self.logits_processors,
                ),
                tools=tools,
                sampling=sampling,
                overflow=overflow,
            ),
        )

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
        return self._submit(
            "edit",
            conv_id,
            lambda job: self._generate(
                job,
                lambda s, stop: s.edit(
                    user_turn_index,
                    text,
                    prompt_text=prompt_text,
                    message_id=message_id,
                    reply_id=reply_id,
                    sampling=sampling,
                    overflow=overflow,
                    should_stop=stop,
                    logits_processors=self.logits_processors,
                ),
                tools=tools,
                sampling=sampling,
                overflow=overflow,
            ),
        )

    def switch_branch(self, conv_id: str, user_turn_index: int, branch_index: int, which: BranchKind = "reply") -> int:
        check_conv_id(conv_id)
        return self._submit(
            "switch_branch", conv_id, lambda job: self._switch(job, user_turn_index, branch_index, which)
        )

    def set_system_prompt(self, conv_id: str, system_prompt: str | None) -> int:
        check_conv_id(conv_id)

        def run(job: _Job) -> None:
            self._session(job).system_prompt = system_prompt or None

        return self._submit("set_system_prompt", conv_id, run)

    def close_conversation(self, conv_id: str, *, delete_cache: bool = False) -> int:
        check_conv_id(conv_id)
        return self._submit("close", conv_id, lambda job: self._close(job, delete_cache))

    def set_kv_bits(self, bits: int | None) -> int:
        """Quantize the full-attention layers' KV to ``bits`` (8; None: keep the model's precision) from each
        conversation's next turn on. Caches already quantized stay so."""

        def run(job: _Job) -> None:
            self.kv_bits = bits
            for s in self.sessions.values():
                s.kv_bits = bits

        return self._submit("set_kv_bits", "", run)

    def set_memory_budget(self, nbytes: int | None) -> int:
        def run(job: _Job) -> None:
            self._budget = nbytes
            self._enforce_budget(keep=None)

        return self._submit("set_memory_budget", "", run)

    def spill_all(self) -> int:
        return self._submit("spill_all", "", lambda job: self._spill_all())

    def complete(self, request: CompletionRequest, listener: Callable[[Event], None]) -> int:
        """A stateless request of the local server: its whole conversation (or a raw prompt) and one reply.

        The engine finds the cached conversation sharing the longest prefix (``olmo3.chat.prefix_index``) and runs
        the turn there. Events of this job go to ``listener`` only, on the engine thread (see
        ``olmo3.chat.completion`` for the sequence); nothing of it reaches ``on_event``."""
        return self._submit("complete", SERVE_PREFIX, lambda job: self._complete(job, request), listener)

    def call(self, fn: Callable[[Engine], Any]) -> int:
        """Run ``fn(engine)`` on the engine thread (for tools and tests that need MLX state)."""
        return self._submit("call", "", lambda job: fn(self))

    def quantize(
        self,
        src: str | Path,
        dst: str | Path,
        *,
        bits: int = 4,
        on_progress: Callable[[int, int, str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_done: Callable[[BaseException | None], None],
    ) -> int:
        """Quantize the bf16 folder ``src`` into ``dst`` as an engine job: MLX runs only on this thread.

        ``on_progress(done, total, what)`` and ``on_done(error)`` are called on the engine thread; a failure (also
        ``QuantizeCancelledError`` once ``should_stop()`` says so, checked between layers) goes to ``on_done``
        rather than becoming a ``JobFailed`` event, so a chat never shows it. Jobs queued behind it wait.
        """

        def run(job: _Job) -> None:
            from ..model.quantize import quantize_folder

            error: BaseException | None = None
            try:
                quantize_folder(src, dst, bits=bits, on_progress=on_progress, should_stop=should_stop)
            except Exception as e:
                error = e
            on_done(error)

        return self._submit("quantize", "", run)

    def run_quantize(
        self,
        src: Path,
        dst: Path,
        *,
        bits: int,
        on_progress: Callable[[int, int, str], None],
        should_stop: Callable[[], bool],
    ) -> Path:
        """``quantize`` for another thread that waits for it (a download's, the CLI's): an ``olmo3.hub.Quantizer``.

        Returns ``dst`` or raises what quantizing raised; raises RuntimeError if the engine is not running."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("run_quantize would wait for itself on the engine thread; use quantize()")
        finished = threading.Event()
        outcome: list[BaseException | None] = []

        def done(error: BaseException | None) -> None:
            outcome.append(error)
            finished.set()

        self.quantize(src, dst, bits=bits, on_progress=on_progress, should_stop=should_stop, on_done=done)
        while not finished.wait(0.25):
            if not self.running:
                raise RuntimeError("the engine is not running, so the model cannot be quantized")
        if outcome[0] is not None:
            raise outcome[0]
        return Path(dst)

    def cache_path(self, conv_id: str) -> Path:
        """The spilled cache of a conversation (a parallel model's rank 0 part: ``<id>.tensor2-r0.safetensors``)."""
        check_conv_id(conv_id)
        return self.cache_dir / f"{conv_id}{getattr(self.model, 'cache_tag', '')}.safetensors"

    def _cache_file(self, conv_id: str) -> Path:
        """Where a conversation's cache is spilled: the app's beside each other, the server's in ``serve/``."""
        if is_serve_id(conv_id):
            tag = getattr(self.model, "cache_tag", "")  # a parallel model's part, as for the app's conversations
            return self.cache_dir / "serve" / f"{conv_id[len(SERVE_PREFIX) :]}{tag}.safetensors"
        return self.cache_path(conv_id)

    def delete_cache_file(self, conv_id: str) -> int:
        """Delete a conversation's spilled cache; returns the bytes freed (safe from any thread)."""
        p = self.cache_path(conv_id)
        try:
            n = p.stat().st_size
            p.unlink()
            return n
        except FileNotFoundError:
            return 0

    def remove_orphan_caches(self, keep: set[str]) -> int:
        """Delete spilled caches of conversations that no longer exist (e.g. purged from the Trash).

        Returns the bytes freed; safe from any thread (it touches only files)."""
        freed = 0
        if not self.cache_dir.is_dir():
            return 0
        for path in self.cache_dir.glob("*.safetensors"):
            stem = path.name.removesuffix(".safetensors")
            conv_id = stem.split(".", 1)[0]  # <id>, or <id>.<parallel tag>
            if stem.endswith(".tmp") or conv_id not in keep:
                try:
                    freed += path.stat().st_size
                    path.unlink()
                except OSError:
                    log.warning("could not delete orphan cache %s", path)
        return freed

    def budget(self) -> MemoryBudget:
        """What models may use here: Metal's working set or 75 % of RAM (olmo3.memory), at most the user's limit."""
        return memory_budget(self.memory_limit)

    @property
    def memory_budget(self) -> int:
        """Bytes of KV cache kept warm across conversations (the pool); the rest is spilled to disk."""
        if self._budget is not None:
            return self._budget if self.memory_limit is None else min(self._budget, self.memory_limit)
        return default_memory_budget(self.info.weight_bytes if self.info else 0, self.budget())

    # ------------------------------------------------------------------ internals (engine thread)
    def _submit(
        self, kind: str, conv_id: str, fn: Callable[[_Job], None], listener: Callable[[Event], None] | None = None
    ) -> int:
        with self._id_lock:
            job_id = next(self._ids)
            if listener is not None:
                self._listeners[job_id] = listener
            self._last_submitted = job_id
            self._queue.put(_Job(job_id, kind, conv_id, fn))
        return job_id

    def _emit(self, event: Event) -> None:
        listener = self._listeners.get(event.job_id) if event.job_id else None
        targets = [listener] if listener is not None else []
        if not is_serve_id(event.conv_id):  # the server's conversations are none of the app's business
            targets.append(self.on_event)
        for target in targets:
            try:
                target(event)
            except Exception:  # a broken listener must not kill the engine
                log.exception("event listener failed on %r", type(event).__name__)

    def _loop(self) -> None:
        try:
            self._run_jobs()
        finally:
            _release_thread_mlx_state()

    def _run_jobs(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._emit(JobStarted(job_id=job.id, conv_id=job.conv_id, kind=job.kind))
            try:
                if job.serves and self._stop_requested(job):
                    self._emit(JobCancelled(job_id=job.id, conv_id=job.conv_id))  # cancelled while queued
                    continue
                job.fn(job)
            except Exception as e:  # every failure becomes an event; the thread lives on
                log.exception("job %s (%s) failed", job.id, job.kind)
                self._emit(
                    JobFailed(job_id=job.id, conv_id=job.conv_id, message=describe_error(e), error=type(e).__name__)
                )
            finally:
                with self._id_lock:
                    self._listeners.pop(job.id, None)
                    self._cancelled.discard(job.id)
                with self._done_cv:
                    self._done.add(job.id)
                    self._done_cv.notify_all()

    def _load_model(self, job: _Job, path: Path, context_tokens: int | None, force: bool) -> None:
        from ..fit import ModelWontFitError

        t0 = time.perf_counter()
        record_working_set()  # on the engine thread: Metal's working set becomes everyone's budget (olmo3.memory)
        try:
            plan = self.loader.plan(path, context_tokens=context_tokens, budget=self.budget(), force=force)
        except ModelWontFitError as e:
            fit = e.plan.fit
            log.info("refused to load %s: %s", path, fit.message)
            self._emit(
                ModelWontFit(
                    job_id=job.id,
                    path=str(path),
                    context_tokens=e.plan.context_tokens,
                    max_context=e.plan.max_context,
                    weight_bytes=fit.weight_bytes,
                    kv_bytes=fit.kv_bytes,
                    needed_bytes=fit.needed_bytes,
                    budget_bytes=fit.budget_bytes,
                    message=fit.message,
                )
            )
            return
        self._spill_all()
        model, tokenizer = self.loader.load(path)
        self.context_tokens, self._forced = plan.context_tokens, not plan.fits
        self._drop_serve_sessions()  # spilled above; read back from disk for this model by the next request
        states = {cid: s.to_state() for cid, s in self.sessions.items()}
        options = {cid: (s.sampling, s.system_prompt) for cid, s in self.sessions.items()}
        self.model, self.tokenizer, self.info = model, tokenizer, model.info
        # Conversations survive a model switch; their transcripts and caches belong to the old model and
        # are re-prefilled (the fingerprint check in load_state and in the cache file decides).
        self.sessions = {}
        for cid, state in states.items():
            s = self._new_session(options[cid][1], None)
            s.sampling = options[cid][0]
            s.load_state(state)
            self.sessions[cid] = s
        self._emit(
            ModelLoaded(
                job_id=job.id, info=self.info, load_s=time.perf_counter() - t0, context_tokens=self.context_tokens
            )
        )

    def _unload_model(self, job: _Job) -> None:
        self._spill_all()
        self._drop_serve_sessions()
        self.model = self.tokenizer = self.info = None
        self.context_tokens, self._forced = 0, False
        import mlx.core as mx

        mx.clear_cache()
        self._emit(ModelUnloaded(job_id=job.id))

    def _drop_serve_sessions(self) -> None:
        for cid in [c for c in self.sessions if is_serve_id(c)]:
            del self.sessions[cid]
            self._last_used.pop(cid, None)
        self._pool = None

    def _complete(self, job: _Job, request: CompletionRequest) -> None:
        from .prefix_index import ServePool, admit

        if self._pool is None and self.model is not None:
            self._pool = ServePool(self, disk_limit=self.serve_disk_limit)
        prepared = admit(self._pool, request)  # which conversation it continues, or why it cannot run
        if isinstance(prepared, CompletionRejected):
            self._emit(dataclasses.replace(prepared, job_id=job.id, conv_id=job.conv_id))
            return
        job.conv_id = prepared.conv_id
        prepared.processors = self.logits_processors
        self._generate(job, prepared.start)

    def _new_session(self, system_prompt: str | None, sampling: dict[str, Any] | None) -> ChatSession:
        from .session import ChatSession

        opts = dict(self.session_options)
        opts.update(sampling or {})
        opts.setdefault("context_limit", self.context_tokens or None)
        return ChatSession(self.model, self.tokenizer, system_prompt, kv_bits=self.kv_bits, **opts)

    def _require_model(self) -> None:
        if self.model is None:
            raise RuntimeError("no model is loaded: choose a model first")

    def _session(self, job: _Job) -> ChatSession:
        s = self.sessions.get(job.conv_id)
        if s is None:
            raise KeyError(f"conversation {job.conv_id} is not open")
        return s

    def _open(
        self, job: _Job, system_prompt: str | None, state: TranscriptState | None, sampling: dict[str, Any] | None
    ) -> None:
        self._require_model()
        s = self.sessions.get(job.conv_id)
        if s is None or state is not None:
            s = self._new_session(system_prompt, sampling)
            if state is not None:
                s.load_state(state)
                if system_prompt is not None:
                    s.system_prompt = system_prompt or None
            self.sessions[job.conv_id] = s
        elif sampling:
            s.sampling = s.sampling.merged(sampling)
        self._last_used[job.conv_id] = time.monotonic()
        cache_state: CacheStateKind = (
            "warm" if s.cache is not None else ("disk" if self._cache_file(job.conv_id).exists() else "cold")
        )
        self._emit(
            ConversationOpened(
                job_id=job.id,
                conv_id=job.conv_id,
                messages=s.messages,
                context_used=len(s.tokens),
                context_limit=s.context_limit,
                cache_state=cache_state,
            )
        )

    def _generate(
        self,
        job: _Job,
        start: Callable[[Any, Callable[[], bool]], Any],
        *,
        tools: ToolRunner | None = None,
        sampling: dict[str, Any] | None = None,
        overflow: OverflowPolicy = "error",
    ) -> None:
        from .session import ContextOverflowError

        self._require_model()
        s = self._session(job)
        self._busy_conv = job.conv_id
        self._last_used[job.conv_id] = time.monotonic()
        try:
            if s.cache is None:
                self._restore_from_disk(job.conv_id, s)
            # Make room for this turn before it grows the cache.
            self._enforce_budget(keep=job.conv_id)
            # A context checked to fit before loading may use its KV; a forced load lives with what is left.
            checked = 0 if self._forced else self.info.kv_bytes(self.context_tokens)
            s.kv_budget_bytes = max(
                self.memory_budget, conversation_memory_limit(self.info.weight_bytes, self.budget()), checked
            )
            stop = lambda: self._stop_requested(job)  # noqa: E731 - read on the engine thread only
            # The tools go into this turn's prompt (None: none, as before). A server request brings its own.
            offered = s.tools if is_serve_id(job.conv_id) else offer(s, tools, stop)
            try:
                events = start(s, stop)
            except ContextOverflowError as e:
                self._emit(
                    ContextOverflow(
                        job_id=job.id,
                        conv_id=job.conv_id,
                        used=e.used,
                        new_tokens=e.new_tokens,
                        max_tokens=e.max_tokens,
                        limit=e.limit,
                        droppable_turns=e.droppable_turns,
                        reason=e.reason,
                    )
                )
                return
            if tools is not None and offered:
                events = run_tool_turn(
                    s,
                    events,
                    tools,
                    self.consent,
                    should_stop=stop,
                    sampling=sampling,
                    overflow=overflow,
                    logits_processors=self.logits_processors,
                    overflow_error=ContextOverflowError,
                )
            for event in events:
                if isinstance(event, TurnFinished) and event.reply is None and event.stats.finish_reason == "cancelled":
                    self._emit(dataclasses.replace(event, job_id=job.id, conv_id=job.conv_id))
                    self._emit(JobCancelled(job_id=job.id, conv_id=job.conv_id))
                    continue
                self._emit(dataclasses.replace(event, job_id=job.id, conv_id=job.conv_id))
        finally:
            self._busy_conv = None
            self._last_used[job.conv_id] = time.monotonic()
        self._enforce_budget(keep=job.conv_id)
        self._emit(
            CacheState(
                job_id=job.id, conv_id=job.conv_id, state="warm" if s.cache is not None else "cold", nbytes=s.kv_bytes()
            )
        )

    def _switch(self, job: _Job, user_turn_index: int, branch_index: int, which: BranchKind) -> None:
        s = self._session(job)
        s.switch_branch(user_turn_index, branch_index, which)
        self._emit(
            BranchSwitched(job_id=job.id, conv_id=job.conv_id, which=which, messages=s.messages, state=s.to_state())
        )

    def _close(self, job: _Job, delete_cache: bool) -> None:
        s = self.sessions.pop(job.conv_id, None)
        self._last_used.pop(job.conv_id, None)
        if delete_cache:
            self.delete_cache_file(job.conv_id)
            if getattr(self.model, "replicated", False):
                self.model.delete_spilled(job.conv_id)  # the other ranks' parts too
        elif s is not None and s.cache is not None:
            self._spill(job.conv_id, s)
        self._emit(ConversationClosed(job_id=job.id, conv_id=job.conv_id))

    # ------------------------------------------------------------------ memory pool and disk
    def _pool_bytes(self) -> int:
        return sum(s.kv_bytes(include_snapshots=True) for s in self.sessions.values())

    def _enforce_budget(self, keep: str | None) -> None:
        """Drop snapshots, then spill live caches, least recently used first, until under budget."""
        budget = self.memory_budget
        if self._pool_bytes() <= budget:
            return
        order = sorted(self.sessions, key=lambda c: self._last_used.get(c, 0.0))
        for cid in order:
            if cid != keep and self.sessions[cid].snapshots:
                self.sessions[cid].drop_snapshots()
                if self._pool_bytes() <= budget:
                    return
        for cid in order:
            s = self.sessions[cid]
            if cid != keep and s.cache is not None:
                self._spill(cid, s)
                if self._pool_bytes() <= budget:
                    return

    def _spill(self, conv_id: str, s: Any) -> None:
        from mlx_lm.models.cache import save_prompt_cache

        if s.cache is None:
            return
        path = self._cache_file(conv_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = _cache_meta(s)
        if getattr(s.cache, "mirror", None) is not None:
            self.model.spill(path, conv_id, s.cache, meta)  # every rank writes its part
        else:
            tmp = path.with_suffix(".tmp.safetensors")
            save_prompt_cache(str(tmp), s.cache, meta)
            os.replace(tmp, path)  # atomic: a crash mid-write never leaves a half file under the real name
        s.drop_cache()
        self._emit(CacheState(conv_id=conv_id, state="disk", nbytes=path.stat().st_size))
        if self._pool is not None and is_serve_id(conv_id):
            self._pool.spilled(conv_id, s)

    def _shutdown(self) -> None:
        self._spill_all()
        close = getattr(self.loader, "close", None)
        if close is not None:  # a parallel group: the followers stop after the caches are written
            try:
                close()
            except Exception:
                log.exception("could not stop the parallel group")

    def _spill_all(self) -> None:
        for cid, s in list(self.sessions.items()):
            if s.cache is not None:
                try:
                    self._spill(cid, s)
                except Exception:
                    log.exception("could not spill the cache of %s", cid)

    def _restore_from_disk(self, conv_id: str, s: Any) -> None:
        from mlx_lm.models.cache import load_prompt_cache

        path = self._cache_file(conv_id)
        if not path.exists() or not s.tokens:
            return
        if getattr(self.model, "replicated", False):  # every rank checks its part; all restore or none
            cache, problems = self.model.load_spilled(path, conv_id, _cache_meta(s))
            if problems:
                log.warning("discarding the cache parts of %s: %s; the turn re-prefills", conv_id, "; ".join(problems))
                return
            s.cache, s.restored_from_disk = cache, True
            return
        try:
            check_cache_file(path, len(s.info.layer_types))  # the header only: mlx-lm trusts what it reads
            cache, meta = load_prompt_cache(str(path), return_metadata=True)
            problems = []
            if meta.get("format") != CACHE_FORMAT:
                problems.append(f"format {meta.get('format')!r}")
            if meta.get("model_fingerprint") != s.info.fingerprint:
                problems.append("made with other model weights")
            if meta.get("tokens_hash") != s.tokens_hash():
                problems.append("transcript differs")
            if len(cache) != len(s.info.layer_types):
                problems.append(f"{len(cache)} layers, model has {len(s.info.layer_types)}")
            elif {c.offset for c in cache} != {len(s.tokens)}:
                problems.append("offsets do not match the transcript")
        except Exception as e:  # corrupt file: safetensors/MLX raise various errors
            problems = [f"unreadable ({e})"]
        if problems:
            log.warning("discarding cache file %s: %s; the turn re-prefills", path, "; ".join(problems))
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)  # a server conversation's token index
            return
        s.cache = cache
        s.restored_from_disk = True
        path.unlink(missing_ok=True)  # the live cache is the truth now; it is written again on spill
        path.with_suffix(".json").unlink(missing_ok=True)
