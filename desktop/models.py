"""The app's model manager: :class:`olmo3.hub.ModelStore` plus download bookkeeping, for the picker and toolbar.

It lives as long as the main window, so downloads keep going (and keep reporting) while the picker is closed.
Download events arrive on hub download threads and are relayed to the GUI thread by
:class:`desktop.bridge.DownloadRelay`; slow calls (delete, import, asking the Hub about a custom repo, searching
it) run on the chores thread (:class:`desktop.bridge.ChoreRunner`). "Download and quantize" hands the hub a
``quantizer`` (the window sets it to the engine bridge's ``run_quantize``: quantizing runs MLX, so it runs as an
engine job).

Signals:
    changed(): the installed list or a download's state changed (views re-read).
    download_event(object): every ``olmo3.hub.DownloadEvent``, on the GUI thread.
    download_failed(str, str): repo id and a one-sentence message (the picker shows it on the model's card).
    error(str, str): a title and a message the user should see (the picker shows them in its banner).
    deleted(str, int): model name, bytes freed.
    imported(object): the ``LocalModel`` added by "Add model folder…".
    planned(object, object): repo id and a ``DownloadPlan`` (or an Exception) for a custom repo.
    searched(object): ``olmo3.hub.search.SearchResults`` from "Search Hugging Face".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from desktop.bridge import ChoreRunner, DownloadRelay

log = logging.getLogger(__name__)


@dataclass
class DownloadState:
    """What the UI shows for one download (and, for "download and quantize", its quantizing)."""

    repo_id: str
    status: str = "starting"  # starting|running|verifying|retrying|quantizing|paused|cancelled|failed|completed
    done_bytes: int = 0
    total_bytes: int = 0
    speed_bps: float | None = None
    eta_s: float | None = None
    message: str = ""  # one sentence for the card (failed, retrying)
    detail: str = ""  # the hub's own words (a tooltip)
    quantize_bits: int | None = None  # "download and quantize": the second phase's target
    quantize_fraction: float = 0.0
    quantize_step: str = ""

    @property
    def fraction(self) -> float:
        if self.status == "quantizing":
            return self.quantize_fraction
        return self.done_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def active(self) -> bool:
        return self.status in ("starting", "running", "verifying", "retrying", "quantizing")


def describe_download(state: DownloadState) -> str:
    """ "1.20 GB of 4.11 GB · 24.0 MB/s · 2m01s left" (or the status in words)."""
    from olmo3.units import format_bytes, format_duration

    step = ""
    if state.quantize_bits is not None:
        step = "Step 2 of 2: " if state.status == "quantizing" else "Step 1 of 2: downloading · "
    if state.status == "quantizing":
        return f"{step}quantizing to {state.quantize_bits}-bit on this Mac · {state.quantize_step or 'starting'}"
    if state.status == "verifying":
        return step + "Verifying files…"
    if state.status == "retrying":
        return step + (state.message or "Connection lost, retrying…")
    if state.status == "failed":
        return state.message
    if state.status == "paused":
        return f"Paused at {format_bytes(state.done_bytes)} of {format_bytes(state.total_bytes)}"
    if state.status == "cancelled":
        return "Cancelled"
    if state.status == "completed":
        return "Downloaded"
    if not state.total_bytes:
        return step + "Starting…"
    parts = [f"{format_bytes(state.done_bytes)} of {format_bytes(state.total_bytes)}"]
    if state.speed_bps:
        parts.append(f"{format_bytes(state.speed_bps)}/s")
    if state.eta_s is not None:
        parts.append(f"{format_duration(state.eta_s)} left")
    return step + " · ".join(parts)


# One sentence each, saying what to do; the hub's own message goes to a tooltip.
FRIENDLY_ERRORS = {
    "offline": "Offline mode is on, so nothing can be downloaded; turn it off and try again.",
    "unreachable": "Couldn't reach Hugging Face. Check your connection and try again; nothing downloaded is lost.",
    "not_found": "That model isn't available on Hugging Face: it may have been renamed or removed.",
    "auth_required": "That model needs a Hugging Face login or license acceptance.",
    "not_olmo3": "That repository is not an Olmo-3 model, so Olmo Desktop can't run it.",
    "unsupported": "That repository has no safetensors weights Olmo Desktop can load.",
    "disk_full": "Not enough disk space for this model.",
    "busy": "This model is already being downloaded by another window or process.",
    "verify_failed": "The downloaded files didn't match what Hugging Face reported. Try the download again.",
    "quantize_failed": "Quantizing the download on this Mac failed; the download is kept, so try again.",
}


def friendly_error(code: str, message: str) -> str:
    """The one sentence to show for a DownloadError ``code`` (the hub's ``message`` where none is written)."""
    if code == "disk_full" and message.startswith("not enough disk space"):  # it has the numbers: keep them
        return f"{message[0].upper()}{message[1:]}."
    return FRIENDLY_ERRORS.get(code) or message


class ModelManager(QObject):
    """See the module docstring."""

    changed = Signal()
    download_event = Signal(object)
    download_failed = Signal(str, str)
    error = Signal(str, str)
    deleted = Signal(str, int)
    imported = Signal(object)
    planned = Signal(object, object)
    searched = Signal(object)

    def __init__(self, store: Any, chores: ChoreRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store  # olmo3.hub.ModelStore
        self._chores = chores
        self._relay = DownloadRelay(self)
        self._relay.relayed.connect(self._on_download_event)
        self._handles: dict[str, Any] = {}
        self.downloads: dict[str, DownloadState] = {}
        self.also_delete: Callable[[Any], int | None] | None = None  # set by the window: drop conversation caches
        self.quantizer: Callable[..., object] | None = None  # set by the window: the engine bridge's run_quantize
        self.search_cache: Path | None = None  # set by the window (its cache folder); None: the user cache folder
        self.searching = False

    # listing (fast: local files only) --------------------------------------------------------------------------
    def installed(self) -> list[Any]:
        try:
            return [m for m in self.store.list_models()]
        except OSError as exc:
            self.error.emit("Can't read the models folder", str(exc))
            return []

    def catalog(self) -> list[Any]:
        try:
            return list(self.store.catalog())
        except OSError as exc:
            self.error.emit("Can't read the models folder", str(exc))
            return []

    def budget(self) -> Any:
        from olmo3.memory import memory_budget  # no MLX: the engine hands Metal's working set in

        return memory_budget()

    # downloads ------------------------------------------------------------------------------------------------
    def start_download(self, repo_id: str, *, quantize_bits: int | None = None) -> bool:
        """Start or resume a download (``quantize_bits``: download bf16 weights and quantize them here)."""
        from olmo3.hub import InvalidRepoIdError

        previous = self.downloads.get(repo_id)
        if quantize_bits is None and previous is not None:
            quantize_bits = previous.quantize_bits  # resuming "download and quantize"
        if quantize_bits is not None and self.quantizer is None:
            self.error.emit("Can't quantize here", "Quantizing needs the engine, which is not running.")
            return False
        try:
            handle = self.store.start_download(
                repo_id, on_event=self._relay, quantize_bits=quantize_bits, quantizer=self.quantizer
            )
        except InvalidRepoIdError as exc:
            self.error.emit("Not a valid model name", str(exc))
            return False
        self._handles[handle.repo_id] = handle
        self.downloads[handle.repo_id] = DownloadState(handle.repo_id, quantize_bits=quantize_bits)
        self.changed.emit()
        return True

    def resume(self, name: str, *, quantize_bits: int | None = None) -> bool:
        model = self.store.find(name)
        repo_id = (model.repo_id if model is not None else None) or name
        return self.start_download(repo_id, quantize_bits=quantize_bits)

    def pause(self, repo_id: str) -> None:
        handle = self._handles.get(repo_id)
        if handle is not None:
            handle.pause()

    def cancel(self, repo_id: str, *, discard: bool = True) -> None:
        """Stop a download; ``discard`` also deletes what it downloaded (a failed or paused one's files too)."""
        handle = self._handles.get(repo_id)
        if handle is not None and not handle.done:
            handle.cancel(discard=discard)
            return
        if not discard:
            return
        has_files = self.store.staged(repo_id) is not None
        if not has_files:
            model = self.store.find(repo_id)
            has_files = model is not None and not model.installed and model.source != "hf_cache"
        if has_files:
            self.delete(repo_id)
        else:  # nothing on disk (it failed before the first byte): forget the failure
            self.downloads.pop(repo_id, None)
            self.changed.emit()

    def active_downloads(self) -> list[DownloadState]:
        return [d for d in self.downloads.values() if d.active]

    def _on_download_event(self, event: object) -> None:
        from olmo3 import hub

        repo_id = getattr(event, "repo_id", "")
        state = self.downloads.setdefault(repo_id, DownloadState(repo_id))
        if isinstance(event, hub.DownloadStarted):
            state.status, state.total_bytes, state.done_bytes = "running", event.total_bytes, event.done_bytes
        elif isinstance(event, hub.DownloadProgress):
            state.status = "running"
            state.done_bytes, state.total_bytes = event.done_bytes, event.total_bytes
            state.speed_bps, state.eta_s = event.speed_bps, event.eta_s
        elif isinstance(event, hub.DownloadRetrying):
            state.status, state.message = (
                "retrying",
                f"Connection problem; retrying in {event.delay_s:.0f} s…",
            )
            state.detail = event.reason
        elif isinstance(event, hub.DownloadVerifying):
            state.status = "verifying"
        elif isinstance(event, hub.DownloadQuantizing):
            state.status = "quantizing"
            state.quantize_bits = event.bits
            state.quantize_fraction, state.quantize_step = event.fraction, event.what
        elif isinstance(event, hub.DownloadCompleted):
            state.status = "completed"
            self._handles.pop(repo_id, None)
        elif isinstance(event, hub.DownloadFailed):
            state.status = "failed"
            state.message = friendly_error(event.code, event.message)
            state.detail = event.message
            state.done_bytes = event.done_bytes or state.done_bytes
            state.total_bytes = event.total_bytes or state.total_bytes
            self._handles.pop(repo_id, None)
            self.download_failed.emit(repo_id, state.message)
        elif isinstance(event, hub.DownloadCancelled):
            state.status = "paused" if event.paused else "cancelled"
            state.done_bytes, state.total_bytes = (
                event.done_bytes or state.done_bytes,
                event.total_bytes or state.total_bytes,
            )
            self._handles.pop(repo_id, None)
            if event.discarded:
                self.downloads.pop(repo_id, None)
        self.download_event.emit(event)
        if not isinstance(event, (hub.DownloadProgress, hub.DownloadQuantizing)):
            self.changed.emit()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Pause running downloads (partial files are kept and resume next time) and wait for their threads."""
        for handle in list(self._handles.values()):
            handle.pause()
        for handle in list(self._handles.values()):
            handle.wait(timeout)
        self._handles.clear()

    # delete / import / plan (chores thread) ------------------------------------------------------------------
    def delete(self, name: str) -> None:
        store, also = self.store, self.also_delete

        def work() -> int:
            return int(store.delete_model(name, also_delete=also))

        self._chores.submit(work, lambda result, error: self._on_deleted(name, result, error))

    def _on_deleted(self, name: str, freed: object, error: BaseException | None) -> None:
        if error is not None:
            self.error.emit(f"Couldn't delete {name}", str(error))
        else:
            self.downloads.pop(name, None)
            self.deleted.emit(name, freed if isinstance(freed, int) else 0)
        self.changed.emit()

    def import_folder(self, folder: str | Path, *, link: bool = False) -> None:
        store = self.store

        def work() -> Any:
            return store.import_model(folder, link=link)

        self._chores.submit(work, self._on_imported)

    def _on_imported(self, model: object, error: BaseException | None) -> None:
        if error is not None:
            self.error.emit("Couldn't add that folder", str(error))
        else:
            self.imported.emit(model)
        self.changed.emit()

    def plan(self, repo_id: str) -> None:
        """Ask the Hub about ``repo_id`` (files, size, Olmo-3 or not) before downloading it."""
        from olmo3.hub import InvalidRepoIdError, repo_id_from_text, validate_repo_id

        try:
            repo_id = validate_repo_id(repo_id_from_text(repo_id))
        except InvalidRepoIdError as exc:
            self.planned.emit(repo_id, exc)
            return
        store = self.store
        self._chores.submit(
            lambda: store.plan_download(repo_id),
            lambda result, error: self.planned.emit(repo_id, error if error is not None else result),
        )

    # search (chores thread) ---------------------------------------------------------------------------------
    def cached_search(self) -> Any:
        """The results of the last search, read from the cache file (no network); None if there are none."""
        from olmo3.hub.search import load_cached

        return load_cached(self.search_cache, self.store.endpoint)

    def search(self) -> None:
        """Ask Hugging Face for Olmo-3 MLX repos, each sized and judged; ``searched`` brings the results."""
        from olmo3.hub.search import search_hub

        if self.searching:
            return
        self.searching = True
        store, cache = self.store, self.search_cache
        self._chores.submit(lambda: search_hub(store, cache_path=cache), self._on_searched)

    def _on_searched(self, results: object, error: BaseException | None) -> None:
        self.searching = False
        if error is not None:  # search_hub reports network trouble in its result; this is a bug
            self.error.emit("Couldn't search Hugging Face", str(error))
            return
        self.searched.emit(results)
