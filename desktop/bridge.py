"""Qt side of the engine and of blocking chores: events become signals delivered on the GUI thread.

Threads in the app:

* the **GUI thread** (widgets, the conversation store);
* the **engine thread**, started and owned by :class:`olmo3.chat.engine.Engine`: the one thread that imports, loads and
  runs MLX (MLX streams are thread-local). Its job methods are thread-safe and return at once;
* the **chores thread**, a :class:`QThread` (:class:`ChoreRunner`) for slow file work that must not freeze the
  window and must not queue behind a generation on the engine thread: copying an imported model, deleting
  gigabytes, asking the Hub about a custom repo.
* download threads started by :class:`olmo3.hub.ModelStore`.

:class:`EngineBridge` owns the Engine. The engine calls ``_on_engine_event`` on the engine thread; it only emits
``event`` (a Qt signal). Receivers are bound methods of GUI-thread QObjects, so Qt queues every delivery to the
GUI thread (never connect a lambda: it would run on the emitting thread). The same pattern forwards download
events (:class:`DownloadRelay`).

"Connect to an Olmo server": the bridge can drive a :class:`olmo3.remote.engine.RemoteEngine` instead (a thread of its
own, ``olmo3-remote``, no MLX), with the same job methods and events; while it is connected, the chat's jobs go to
it and the local engine's events are held back (the local engine keeps running for quantizing and the local
server). Loading a local model, unloading, or :meth:`EngineBridge.disconnect_remote` goes back to the local engine.
``generation`` counts the switches, so the controller knows to open its conversations again.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from olmo3.chat.transcript import BranchKind, OverflowPolicy, TranscriptState

log = logging.getLogger(__name__)


class EngineBridge(QObject):
    """Owns the :class:`olmo3.chat.engine.Engine`; re-emits its events as a Qt signal.

    Signals:
        engine_event(object): an ``olmo3.chat.events`` dataclass, delivered on the GUI thread. (Not ``event``:
            that name is ``QObject.event()``, Qt's event handler, which a signal must not shadow.)
    """

    engine_event = Signal(object)

    def __init__(
        self,
        *,
        cache_dir: Path,
        memory_budget_bytes: int | None = None,
        memory_limit_bytes: int | None = None,
        kv_bits: int | None = None,
        session_options: dict[str, Any] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        from olmo3.chat.engine import (
            Engine,  # imports MLX lazily on the engine thread's first job
        )

        self._engine = Engine(
            self._on_engine_event,
            cache_dir=cache_dir,
            memory_budget_bytes=memory_budget_bytes,
            memory_limit_bytes=memory_limit_bytes,
            kv_bits=kv_bits,
            session_options=session_options,
        )
        self._started = False
        self._remote: Any = None  # olmo3.remote.engine.RemoteEngine while connected to a server
        self._connections = 0
        self.generation = 0  # engine switches so far (local → remote → local ...)

    @property
    def engine(self) -> Any:
        """The local engine (budgets, caches on disk, quantizing and the local server are always its)."""
        return self._engine

    @property
    def remote(self) -> Any:
        """The connected :class:`olmo3.remote.engine.RemoteEngine`, or None (the local engine chats)."""
        return self._remote

    def _chat(self) -> Any:
        """The engine the chat's jobs go to."""
        return self._remote if self._remote is not None else self._engine

    def connect_remote(self, address: Any, api_key: str | None) -> int:
        """Chat on the server at ``address`` (an ``olmo3.remote.client.ServerAddress``) from now on: its
        ``ModelLoaded`` (or ``JobFailed``) answers the returned job. The local model is unloaded (its caches spill
        to disk) to free its memory."""
        from olmo3.remote.engine import RemoteEngine

        self._stop_remote()
        self._connections += 1
        remote = RemoteEngine(None, address, api_key, first_job_id=self._connections << 40)
        remote.on_event = partial(self._on_remote_event, remote)
        self._remote = remote
        self.generation += 1
        if self._started:
            self._engine.unload_model()  # its ModelUnloaded is held back: the window now shows the server's model
        remote.start()
        return int(remote.load_model())

    def disconnect_remote(self) -> bool:
        """Back to the local engine (no model loaded): the window hears ``ModelUnloaded``. False if not connected."""
        if not self._stop_remote():
            return False
        from olmo3.chat.events import ModelUnloaded

        self.engine_event.emit(ModelUnloaded())
        return True

    def _stop_remote(self) -> bool:
        remote, self._remote = self._remote, None
        if remote is None:
            return False
        self.generation += 1
        if not remote.shutdown(timeout=10):
            log.error("the remote engine's thread did not stop within 10 s")
        return True

    def start(self) -> None:
        if not self._started:
            self._engine.start()
            self._started = True

    @property
    def running(self) -> bool:
        return bool(self._engine.running)

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Cancel, spill every conversation cache to disk and join the engine thread. True if it stopped."""
        self._stop_remote()
        if not self._started:
            return True
        stopped = bool(self._engine.shutdown(timeout=timeout))
        if not stopped:
            log.error("the engine thread did not stop within %.0f s", timeout)
        self._started = not stopped
        return stopped

    # Runs on the engine thread: touch nothing but the signal.
    def _on_engine_event(self, event: object) -> None:
        if self._remote is None:  # while a server chats, the local engine's news is not the window's
            self.engine_event.emit(event)

    # Runs on the remote engine's thread; a disconnected one's late events are dropped.
    def _on_remote_event(self, remote: Any, event: object) -> None:
        if remote is self._remote:
            self.engine_event.emit(event)

    # Job submission (thread-safe, returns a job id at once) --------------------------------------------------
    def load_model(self, path: str | Path, *, context_tokens: int | None = None, force: bool = False) -> int:
        self._stop_remote()  # a local model: back to the local engine
        return int(self._engine.load_model(path, context_tokens=context_tokens, force=force))

    def unload_model(self) -> int:
        if self.disconnect_remote():
            return 0
        return int(self._engine.unload_model())

    def open_conversation(
        self,
        conv_id: str,
        *,
        system_prompt: str | None,
        state: TranscriptState | None,
        sampling: dict[str, Any] | None,
    ) -> int:
        return int(self._chat().open_conversation(conv_id, system_prompt=system_prompt, state=state, sampling=sampling))

    def send(
        self,
        conv_id: str,
        text: str,
        *,
        message_id: str,
        reply_id: str,
        sampling: dict[str, Any] | None,
        overflow: OverflowPolicy = "error",
        tools: Any = None,
        prompt_text: str | None = None,
    ) -> int:
        """``tools``: the turn's ``olmo3.tools.runner.HubTools`` (None: no tools)."""
        return int(
            self._chat().send(
                conv_id,
                text,
                prompt_text=prompt_text,
                message_id=message_id,
                reply_id=reply_id,
                sampling=sampling,
                overflow=overflow,
                tools=tools,
            )
        )

    def regenerate(
        self,
        conv_id: str,
        *,
        reply_id: str,
        sampling: dict[str, Any] | None,
        overflow: OverflowPolicy = "error",
        tools: Any = None,
    ) -> int:
        return int(
            self._chat().regenerate(conv_id, reply_id=reply_id, sampling=sampling, overflow=overflow, tools=tools)
        )

    def edit(
        self,
        conv_id: str,
        user_turn_index: int,
        text: str,
        *,
        message_id: str,
        reply_id: str,
        sampling: dict[str, Any] | None,
        overflow: OverflowPolicy = "error",
        tools: Any = None,
        prompt_text: str | None = None,
    ) -> int:
        return int(
            self._chat().edit(
                conv_id,
                user_turn_index,
                text,
                prompt_text=prompt_text,
                message_id=message_id,
                reply_id=reply_id,
                sampling=sampling,
                overflow=overflow,
                tools=tools,
            )
        )

    def answer_tool_call(self, request_id: int, decision: str) -> bool:
        """Answer a ``ToolCallRequested``: "once", "always" (both allow) or "deny" (thread-safe)."""
        return bool(self._chat().answer_tool_call(request_id, decision))

    def switch_branch(self, conv_id: str, user_turn_index: int, branch_index: int, which: BranchKind) -> int:
        return int(self._chat().switch_branch(conv_id, user_turn_index, branch_index, which))

    def set_system_prompt(self, conv_id: str, system_prompt: str | None) -> int:
        return int(self._chat().set_system_prompt(conv_id, system_prompt))

    def close_conversation(self, conv_id: str, *, delete_cache: bool = False) -> int:
        return int(self._chat().close_conversation(conv_id, delete_cache=delete_cache))

    def set_memory_budget(self, nbytes: int | None) -> int:
        return int(self._engine.set_memory_budget(nbytes))

    def set_kv_bits(self, bits: int | None) -> int:
        return int(self._engine.set_kv_bits(bits))

    @property
    def kv_bits(self) -> int | None:
        return self._engine.kv_bits

    def cancel(self) -> None:
        self._chat().cancel()

    def run_quantize(
        self,
        src: Path,
        dst: Path,
        *,
        bits: int,
        on_progress: Callable[[int, int, str], None],
        should_stop: Callable[[], bool],
    ) -> Path:
        """An ``olmo3.hub.Quantizer``: quantize as an engine job and wait (call it from a download thread, never
        from the GUI thread); progress is reported on the engine thread."""
        return Path(self._engine.run_quantize(src, dst, bits=bits, on_progress=on_progress, should_stop=should_stop))

    def cache_path(self, conv_id: str) -> Path:
        return Path(self._engine.cache_path(conv_id))

    def remove_orphan_caches(self, keep: set[str]) -> int:
        return int(self._engine.remove_orphan_caches(keep))

    def delete_cache_file(self, conv_id: str) -> int:
        return int(self._engine.delete_cache_file(conv_id))

    # The local server (Settings → Local server) runs on this engine: same model, same caches and memory budget.
    def start_local_server(self, config: Any, on_change: Callable[[Any], None]) -> Any:
        """Start an ``olmo3.serve.server.LocalServer`` over this bridge's engine (OSError if the port is taken)."""
        from olmo3.serve.server import LocalServer

        server = LocalServer(self._engine, config, on_change=on_change)
        server.start()
        return server


class DownloadRelay(QObject):
    """Forwards :class:`olmo3.hub.DownloadHandle` events (download thread) to the GUI thread.

    Signals:
        relayed(object): a ``olmo3.hub.DownloadEvent``.
    """

    relayed = Signal(object)

    def __call__(self, event: object) -> None:  # the hub calls this on its download thread
        self.relayed.emit(event)


class _ChoreWorker(QObject):
    """Lives on the chores thread; runs submitted callables one after another."""

    done = Signal(int, object, object)  # chore id, result, error (BaseException or None)

    @Slot(int, object)
    def run(self, chore_id: int, fn: object) -> None:
        try:
            result = fn()  # type: ignore[operator]
        except Exception as exc:  # reported to the GUI, never lost
            log.warning("chore %d failed: %s\n%s", chore_id, exc, traceback.format_exc())
            self.done.emit(chore_id, None, exc)
            return
        self.done.emit(chore_id, result, None)


class ChoreRunner(QObject):
    """A QThread for blocking file and network chores; results come back on the GUI thread.

    ``submit(fn, receiver)`` runs ``fn()`` on the chores thread, then calls ``receiver(result, error)`` on the GUI
    thread. ``receiver`` must be a bound method of a GUI-thread QObject (or a plain function that only touches
    GUI state, since it is invoked from :meth:`_deliver`, which runs on the GUI thread).

    Signals:
        _request(int, object): internal, queued to the worker.
    """

    _request = Signal(int, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("olmo-chores")
        self._worker = _ChoreWorker()
        self._worker.moveToThread(self._thread)
        self._request.connect(self._worker.run)
        self._worker.done.connect(self._deliver)
        self._receivers: dict[int, Callable[[Any, BaseException | None], None]] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._thread.start()

    def submit(self, fn: Callable[[], Any], receiver: Callable[[Any, BaseException | None], None]) -> int:
        with self._lock:
            self._next += 1
            chore_id = self._next
        self._receivers[chore_id] = receiver
        self._request.emit(chore_id, fn)
        return chore_id

    def pending(self) -> int:
        return len(self._receivers)

    def _deliver(self, chore_id: int, result: object, error: object) -> None:
        receiver = self._receivers.pop(chore_id, None)
        if receiver is not None:
            receiver(result, error if isinstance(error, BaseException) else None)

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Finish the running chore, stop the thread and join it. True if it stopped in time."""
        if not self._thread.isRunning():
            return True
        self._thread.quit()
        stopped = self._thread.wait(timeout_ms)
        if not stopped:
            log.error("the chores thread did not stop within %d ms", timeout_ms)
        return bool(stopped)

    def is_running(self) -> bool:
        return self._thread.isRunning()
