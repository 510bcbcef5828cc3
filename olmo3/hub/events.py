"""What a download reports, how it fails, and the handle that controls it from any thread.

A download runs on its own worker thread and reports ``DownloadEvent`` dataclasses to listeners, called on that
thread (a GUI re-emits them as signals). ``DownloadHandle.pause()`` / ``.cancel()`` / ``.wait()`` work from any
thread. The last event is always one of ``DownloadCompleted``, ``DownloadFailed`` or ``DownloadCancelled``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from .local import LocalModel

__all__ = [
    "DownloadCancelled",
    "DownloadCompleted",
    "DownloadError",
    "DownloadEvent",
    "DownloadFailed",
    "DownloadHandle",
    "DownloadProgress",
    "DownloadQuantizing",
    "DownloadRetrying",
    "DownloadStarted",
    "DownloadVerifying",
    "EventCallback",
    "FileCompleted",
    "Quantizer",
    "StopRequestedError",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DownloadEvent:
    repo_id: str


@dataclass(frozen=True, kw_only=True)
class DownloadStarted(DownloadEvent):
    commit: str
    files: tuple[str, ...]
    total_bytes: int
    done_bytes: int  # already on disk from an earlier, interrupted run


@dataclass(frozen=True, kw_only=True)
class DownloadProgress(DownloadEvent):
    file: str
    file_done: int
    file_total: int
    done_bytes: int
    total_bytes: int
    speed_bps: float | None  # bytes/s over the last few seconds; None until measurable
    eta_s: float | None

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 1.0


@dataclass(frozen=True, kw_only=True)
class DownloadRetrying(DownloadEvent):
    file: str | None
    attempt: int
    delay_s: float
    reason: str


@dataclass(frozen=True, kw_only=True)
class FileCompleted(DownloadEvent):
    file: str
    size: int


@dataclass(frozen=True, kw_only=True)
class DownloadVerifying(DownloadEvent):
    file: str | None  # None: the whole folder (config, safetensors headers against the config)


@dataclass(frozen=True, kw_only=True)
class DownloadQuantizing(DownloadEvent):
    """The second phase of "download and quantize": converting the downloaded bf16 weights on this machine."""

    bits: int
    done_steps: int
    total_steps: int
    what: str  # "layer 3 of 32", "writing the files"

    @property
    def fraction(self) -> float:
        return self.done_steps / self.total_steps if self.total_steps else 0.0


@dataclass(frozen=True, kw_only=True)
class DownloadCompleted(DownloadEvent):
    model: LocalModel
    already_installed: bool = False


@dataclass(frozen=True, kw_only=True)
class DownloadFailed(DownloadEvent):
    code: str  # see DownloadError
    message: str
    done_bytes: int = 0
    total_bytes: int = 0


@dataclass(frozen=True, kw_only=True)
class DownloadCancelled(DownloadEvent):
    paused: bool  # True: partial files kept, starting again resumes
    discarded: bool  # True: the partial folder was removed
    done_bytes: int = 0
    total_bytes: int = 0


EventCallback = Callable[[DownloadEvent], None]


class Quantizer(Protocol):
    """Runs ``olmo3.model.quantize.quantize_folder(src, dst, bits=..., on_progress=..., should_stop=...)`` where MLX
    may run, and blocks until it is done (the app: ``Engine.run_quantize``, an engine job). The hub never imports
    MLX, so a download that ends in quantizing is handed one. Raises what quantizing raised."""

    def __call__(
        self,
        src: Path,
        dst: Path,
        *,
        bits: int,
        on_progress: Callable[[int, int, str], None],
        should_stop: Callable[[], bool],
    ) -> object: ...


class DownloadError(Exception):
    """A download that cannot go on. ``code`` is one of:

    ``offline`` (offline mode is on), ``unreachable`` (no connection after retries), ``not_found`` (repo or
    revision), ``auth_required`` (gated or private: needs a token / license acceptance), ``not_olmo3``,
    ``unsupported`` (no safetensors weights), ``bad_repo`` (inconsistent repo), ``disk_full``, ``busy`` (another
    download of the same model holds its lock), ``verify_failed``, ``quantize_failed`` (converting the download on
    this machine failed), ``server_error``, ``io_error``, ``cancelled``, ``paused``, ``internal``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class StopRequestedError(Exception):
    """Raised inside the download thread when pause/cancel was requested; never leaves the hub."""


StopMode = Literal["pause", "cancel", "discard"]


class DownloadHandle:
    """Controls one running download. Thread-safe: pause/cancel/wait from any thread.

    Listeners are called on the download thread, in order, with every DownloadEvent; an exception in a listener
    is logged and does not stop the download. The last event is one of DownloadCompleted, DownloadFailed or
    DownloadCancelled, after which ``done`` is True and ``wait()`` returns it.
    """

    def __init__(self, repo_id: str) -> None:
        self.repo_id = repo_id
        self._listeners: list[EventCallback] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stop_mode: StopMode | None = None
        self._done = threading.Event()
        self._final: DownloadEvent | None = None
        self._thread: threading.Thread | None = None
        self.last_progress: DownloadProgress | None = None

    def add_listener(self, callback: EventCallback) -> None:
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: EventCallback) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def pause(self) -> None:
        """Stop soon, keeping partial files; starting the download again resumes.

        Takes effect at the next chunk received (``chunk_size``), or on a stalled connection when its read times
        out (``HF_HUB_DOWNLOAD_TIMEOUT``, 10 s); ``state`` is ``"stopping"`` meanwhile.
        """
        self._request_stop("pause")

    def cancel(self, *, discard: bool = False) -> None:
        """Stop soon. Partial files are kept (a later download resumes) unless ``discard`` is True."""
        self._request_stop("discard" if discard else "cancel")

    def _request_stop(self, mode: StopMode) -> None:
        with self._lock:
            if self._stop_mode is None or mode == "discard":
                self._stop_mode = mode
        self._stop.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def stopping(self) -> bool:
        """Pause or cancel was asked for (the download may still be finishing its last chunk)."""
        return self._stop.is_set()

    @property
    def result(self) -> DownloadEvent | None:
        return self._final

    @property
    def state(self) -> str:
        final = self._final
        if final is None:
            return "stopping" if self._stop.is_set() else "running"
        if isinstance(final, DownloadCompleted):
            return "completed"
        if isinstance(final, DownloadFailed):
            return "failed"
        assert isinstance(final, DownloadCancelled)
        return "paused" if final.paused else "cancelled"

    def wait(self, timeout: float | None = None) -> DownloadEvent | None:
        """Block until the download ends; returns its final event (None on timeout)."""
        self._done.wait(timeout)
        return self._final

    def _emit(self, event: DownloadEvent) -> None:
        if isinstance(event, DownloadProgress):
            self.last_progress = event
        with self._lock:
            listeners = list(self._listeners)
        for cb in listeners:
            try:
                cb(event)
            except Exception:
                log.exception("download event listener failed for %s", self.repo_id)

    def _finish(self, event: DownloadEvent) -> None:
        self._final = event
        self._emit(event)
        self._done.set()
