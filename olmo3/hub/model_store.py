"""``ModelStore``: installed models, downloads, import and delete, rooted at one models folder.

The one object the GUI's model picker and the ``olmo3 models`` CLI drive. Listing reads only local files
(``local``); downloads run on worker threads (``download``); imports and downloads are verified without MLX
(``verify``) before a model is listed as installed. A per-model ``flock`` keeps two processes (two app windows,
the app and ``olmo3 models download``) from writing the same folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

from ..appinfo import APP_NAME
from ..memory import MemoryBudget, memory_budget
from ..model.modelinfo import ModelLoadError
from ..units import format_bytes
from .catalog import CATALOG, DEFAULT_CONTEXT_TOKENS, CatalogItem
from .download import DownloadJob, RetryPolicy
from .events import (
    DownloadCancelled,
    DownloadCompleted,
    DownloadError,
    DownloadFailed,
    DownloadHandle,
    EventCallback,
    Quantizer,
)
from .local import (
    LOCKS_DIR,
    MARKER_FORMAT,
    MARKER_NAME,
    LocalModel,
    ModelBusyError,
    ModelImportError,
    ModelNotFoundError,
    Source,
    default_hf_cache_dir,
    default_models_dir,
    delete_from_hf_cache,
    describe_store_dir,
    free_space,
    info_dict,
    now_iso,
    owned_bytes,
    scan_hf_cache,
    scan_store,
    write_json_atomic,
)
from .planner import DownloadPlan, Planner, is_allowed
from .quantize_route import remove_staging, staging_dir
from .repo_ids import MAX_REPO_PART_LEN, validate_repo_id
from .verify import safetensors_metadata, verify_model_folder

try:  # macOS and Linux; the app does not run elsewhere
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["DEFAULT_ENDPOINT", "ModelStore"]

DEFAULT_ENDPOINT: Final = "https://huggingface.co"
COPY_CHUNK_BYTES: Final = 8 * 1024 * 1024


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


class ModelStore:
    """Installed models, downloads, import and delete, rooted at ``models_dir``.

    Args:
        models_dir: where downloads and imports go (default ``user_data_dir("Olmo Desktop")/models``).
        hf_cache_dir: the Hugging Face cache to look for Olmo-3 models in (default from ``HF_HUB_CACHE`` /
            ``HF_HOME``); ``include_hf_cache=False`` ignores it.
        endpoint: the Hub URL (default ``HF_ENDPOINT`` or https://huggingface.co), read when the store is made.
        token: a Hugging Face token for gated/private repos; None uses huggingface_hub's saved login / ``HF_TOKEN``.
        offline: refuse network access (default: ``HF_HUB_OFFLINE``); listing keeps working.
        free_space_fn: bytes free at a path (default ``shutil.disk_usage``); tests pass a small quota.
        retry: retry/backoff policy after dropped connections.
        chunk_size: bytes per read while downloading; also how often progress is reported and pause is noticed.
        progress_interval_s: minimum time between two DownloadProgress events.
    """

    def __init__(
        self,
        models_dir: str | Path | None = None,
        *,
        hf_cache_dir: str | Path | None = None,
        include_hf_cache: bool = True,
        endpoint: str | None = None,
        token: str | bool | None = None,
        offline: bool | None = None,
        free_space_fn: Callable[[Path], int] | None = None,
        retry: RetryPolicy | None = None,
        chunk_size: int = 1024 * 1024,
        progress_interval_s: float = 0.1,
    ) -> None:
        self.models_dir = Path(models_dir).expanduser() if models_dir is not None else default_models_dir()
        self.hf_cache_dir = Path(hf_cache_dir).expanduser() if hf_cache_dir is not None else default_hf_cache_dir()
        self.include_hf_cache = include_hf_cache
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.token = token
        if offline is None:
            offline = _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
        self.offline = offline
        self.free_space_fn = free_space_fn or free_space
        self.retry = retry or RetryPolicy()
        self.chunk_size = chunk_size
        self.progress_interval_s = progress_interval_s
        self._active: dict[str, DownloadHandle] = {}
        self._active_lock = threading.Lock()

    # -- paths -----------------------------------------------------------------------------------------------
    def model_dir(self, name: str) -> Path:
        """``models_dir/owner/name`` for a validated ``owner/name``."""
        owner, model = validate_repo_id(name).split("/")
        return self.models_dir / owner / model

    @contextmanager
    def _model_lock(self, name: str) -> Iterator[bool]:
        """An exclusive, non-blocking, cross-process lock per model (``flock``; released if the process dies)."""
        locks = self.models_dir / LOCKS_DIR
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / (validate_repo_id(name).replace("/", "--") + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        got = False
        try:
            if fcntl is None:  # pragma: no cover
                got = True
            else:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    got = True
                except BlockingIOError:
                    got = False
            yield got
        finally:
            if got and fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- listing ---------------------------------------------------------------------------------------------
    def list_models(self) -> list[LocalModel]:
        """Every model folder: our store's (installed and incomplete), then Olmo-3 models in the HF cache.

        Never touches the network. Store entries come first, so a repo present in both is found in the store.
        """
        models = scan_store(self.models_dir, self._active_names())
        if self.include_hf_cache:
            models.extend(scan_hf_cache(self.hf_cache_dir))
        return models

    def installed_models(self) -> list[LocalModel]:
        return [m for m in self.list_models() if m.installed]

    def incomplete_models(self) -> list[LocalModel]:
        return [m for m in self.list_models() if not m.installed]

    def find(self, name: str, *, source: Source | None = None) -> LocalModel | None:
        """The model called ``name``: installed before incomplete, our store before the HF cache."""
        name = validate_repo_id(name)
        candidates = [m for m in self.list_models() if m.name == name and (source is None or m.source == source)]
        candidates.sort(key=lambda m: (not m.installed, m.source == "hf_cache"))
        return candidates[0] if candidates else None

    def _active_names(self) -> set[str]:
        with self._active_lock:
            return {name for name, handle in self._active.items() if not handle.done}

    def _describe(self, name: str, path: Path) -> LocalModel:
        return describe_store_dir(name, path, active=name in self._active_names())

    # -- catalog ---------------------------------------------------------------------------------------------
    def catalog(
        self, context_tokens: int = DEFAULT_CONTEXT_TOKENS, budget: MemoryBudget | int | None = None
    ) -> list[CatalogItem]:
        """The curated catalog with memory verdicts for this machine and any local copy of each entry."""
        if budget is None:
            budget = memory_budget()
        local: dict[str, LocalModel] = {}
        for m in self.list_models():
            key = m.repo_id or m.name
            if key not in local or (m.installed and not local[key].installed):
                local[key] = m
        items = []
        for e in CATALOG:
            found = local.get(e.repo_id)
            if e.quantize_bits is not None:
                # The quantized copy answers for an Ai2 entry (its marker's repo_id is the Ai2 repo); a bf16
                # download of the same repo does not, but an unfinished "download and quantize" does.
                if found is not None and found.source != "quantized":
                    found = None
                found = found or self.staged(e.repo_id)
            items.append(CatalogItem(e, e.memory_fit(context_tokens, budget), found))
        return items

    def staged(self, repo_id: str) -> LocalModel | None:
        """An unfinished "download and quantize" of ``repo_id`` (its bf16 staging folder), as an incomplete model."""
        path = staging_dir(self.models_dir, repo_id)
        if not path.is_dir():
            return None
        model = self._describe(repo_id, path)
        if model.installed:  # downloaded, not yet quantized
            return dataclasses.replace(
                model,
                status="incomplete",
                problem="downloaded; quantizing did not finish (start again to quantize)",
                total_bytes=model.size_bytes,
            )
        return model

    # -- delete ----------------------------------------------------------------------------------------------
    def delete_model(
        self,
        name: str,
        *,
        also_delete: Callable[[LocalModel], int | None] | None = None,
        source: Source | None = None,
    ) -> int:
        """Delete a model's folder (installed or incomplete) and return the bytes freed.

        ``also_delete(model)`` is called after the folder is gone, to remove what else was made with the model
        (the engine's conversation caches); the bytes it returns are added. A linked import frees only its links;
        the original files are never touched. HF-cache models are removed with huggingface_hub's own cache
        deletion (only that revision's blobs that no other revision uses).
        """
        name = validate_repo_id(name)
        model = self.find(name, source=source)
        if model is None and source is None and (staged := self.staged(name)) is not None:
            with self._active_lock:
                handle = self._active.get(name)
            if handle is not None and not handle.done:
                raise ModelBusyError(f"{name} is being downloaded; pause or cancel it before deleting it")
            freed = owned_bytes(staged.path)
            remove_staging(staged.path)
            return freed
        if model is None:
            raise ModelNotFoundError(f"no model named {name!r} in {self.models_dir} or the Hugging Face cache")
        with self._active_lock:
            handle = self._active.get(name)
        if model.source != "hf_cache" and handle is not None and not handle.done:
            raise ModelBusyError(f"{name} is being downloaded; pause or cancel the download before deleting it")
        if model.source == "hf_cache":
            freed = delete_from_hf_cache(self.hf_cache_dir, model)
        else:
            freed = self._delete_store_dir(name, model.path)
        if also_delete is not None:
            freed += int(also_delete(model) or 0)
        return freed

    def _delete_store_dir(self, name: str, path: Path) -> int:
        root = self.models_dir.resolve()
        if path.is_symlink() or not path.resolve().is_relative_to(root) or path.resolve() == root:
            raise ValueError(f"refusing to delete {path}: not a model folder inside {root}")
        with self._model_lock(name) as locked:
            if not locked:
                raise ModelBusyError(f"{name} is being downloaded by another process; stop it before deleting")
            freed = owned_bytes(path)
            shutil.rmtree(path)
        with suppress(OSError):
            path.parent.rmdir()  # the owner folder, if now empty
        return freed

    def conversation_cache_deleter(self, *cache_dirs: str | Path) -> Callable[[LocalModel], int]:
        """An ``also_delete`` for delete_model that removes the engine's conversation caches made with a model.

        The engine writes ``<cache_dir>/<conversation>.safetensors`` with ``model_fingerprint`` in the
        safetensors metadata; files whose fingerprint is the deleted model's go, unless another installed
        model has the same fingerprint (an identical copy could still use them).
        """

        def delete(model: LocalModel) -> int:
            fingerprint = (model.info or {}).get("fingerprint")
            if not fingerprint:
                return 0
            if any((m.info or {}).get("fingerprint") == fingerprint for m in self.installed_models()):
                return 0
            freed = 0
            for d in cache_dirs:
                for p in sorted(Path(d).glob("*.safetensors")):
                    if safetensors_metadata(p).get("model_fingerprint") == fingerprint:
                        size = p.stat().st_size
                        p.unlink(missing_ok=True)
                        freed += size
            return freed

        return delete

    # -- import ----------------------------------------------------------------------------------------------
    def import_model(
        self,
        source: str | Path,
        *,
        link: bool = False,
        name: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> LocalModel:
        """Verify a local Olmo-3 folder, then copy it (or link its files) into the store as ``name``.

        ``name`` defaults to ``local/<folder name>``. With ``link=True`` the store folder holds symlinks to the
        original files (no copy; deleting the model later never touches the originals). Only weights, config,
        tokenizer and template files are taken. ``on_progress(done_bytes, total_bytes)`` reports copying. The
        folder is verified before (refused early) and after copying (``verify.verify_model_folder``).
        """
        src = Path(source).expanduser().resolve()
        if not src.is_dir():
            raise ModelImportError(f"{src} is not a folder")
        try:
            verify_model_folder(src)
        except (ModelLoadError, ValueError) as e:
            raise ModelImportError(f"{src} is not a loadable Olmo-3 model: {e}") from e
        if name is None:
            cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", src.name).strip(".-").replace("--", "-") or "model"
            name = f"local/{cleaned[:MAX_REPO_PART_LEN]}"
        name = validate_repo_id(name)
        dest = self.model_dir(name)
        if dest.exists():
            raise ModelImportError(f"{name} already exists at {dest}; delete it first or choose another name")
        if src == dest.resolve() or src.is_relative_to(self.models_dir.resolve()):
            raise ModelImportError(f"{src} is already inside the model store {self.models_dir}")
        files = sorted(p for p in src.iterdir() if is_allowed(p.name) and p.is_file())
        sizes = {p.name: p.stat().st_size for p in files}
        total = sum(sizes.values())
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not link:
            free = self.free_space_fn(dest.parent)
            if total > free:
                raise ModelImportError(
                    f"not enough disk space to copy {src.name}: needs {format_bytes(total)}, "
                    f"{format_bytes(free)} free in {dest.parent}"
                )
        tmp = dest.parent / f".{dest.name}.importing-{uuid.uuid4().hex[:8]}"
        with self._model_lock(name) as locked:
            if not locked:
                raise ModelImportError(f"{name} is being written by another download or import")
            try:
                tmp.mkdir()
                done = 0
                for p in files:
                    if link:
                        (tmp / p.name).symlink_to(p)
                    else:
                        done = self._copy_file(p, tmp / p.name, done, total, on_progress)
                info = verify_model_folder(tmp)  # the copy, as it will be used
                marker = {
                    "format": MARKER_FORMAT,
                    "app": APP_NAME,
                    "name": name,
                    "repo_id": None,
                    "source": "link" if link else "copy",
                    "origin": str(src),
                    "files": sizes,
                    "imported_at": now_iso(),
                    "info": info_dict(info, dest.name),
                }
                write_json_atomic(tmp / MARKER_NAME, marker)
                os.rename(tmp, dest)
            except BaseException as e:
                shutil.rmtree(tmp, ignore_errors=True)
                if isinstance(e, ModelLoadError):
                    raise ModelImportError(f"{src} does not load after import: {e}") from e
                if isinstance(e, OSError):
                    raise ModelImportError(f"could not {'link' if link else 'copy'} {src} into {dest}: {e}") from e
                raise
        return self._describe(name, dest)

    @staticmethod
    def _copy_file(src: Path, dst: Path, done: int, total: int, on_progress: Callable[[int, int], None] | None) -> int:
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            while chunk := fi.read(COPY_CHUNK_BYTES):
                fo.write(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)
        shutil.copystat(src, dst)
        return done

    # -- downloads -------------------------------------------------------------------------------------------
    def start_download(
        self,
        repo_id: str,
        *,
        revision: str = "main",
        on_event: EventCallback | None = None,
        quantize_bits: int | None = None,
        quantizer: Quantizer | None = None,
    ) -> DownloadHandle:
        """Start (or resume) downloading ``repo_id`` on a worker thread; returns at once.

        A second call for a model already downloading in this store joins it: the same handle is returned and
        ``on_event`` is added to its listeners. A download of the same model by another process (or another
        ModelStore on the same folder) is refused with a ``busy`` DownloadFailed event. Raises
        InvalidRepoIdError synchronously for a bad repo id.

        With ``quantize_bits`` (and a ``quantizer`` to run MLX where it may run), the repo's bf16 weights are
        downloaded to a staging folder and converted on this machine (``quantize_route``); the final event's
        model is the quantized copy, named ``quantize_route.quantized_name(repo_id, bits)``.
        """
        repo_id = validate_repo_id(repo_id)
        if quantize_bits is not None and (quantizer is None or quantize_bits not in (4, 8)):
            raise ValueError("quantize_bits must be 4 or 8, with a quantizer to run it")
        with self._active_lock:
            previous = self._active.get(repo_id)
            if previous is not None and not previous.done and not previous.stopping:
                if on_event is not None:
                    previous.add_listener(on_event)
                return previous
            # A download paused a moment ago may still be finishing its last chunk: this run starts after it.
            handle = DownloadHandle(repo_id)
            if on_event is not None:
                handle.add_listener(on_event)
            self._active[repo_id] = handle
        job = DownloadJob(self, handle, revision, after=previous, quantize_bits=quantize_bits, quantizer=quantizer)
        thread = threading.Thread(target=job.run, name=f"download {repo_id}", daemon=True)
        handle._thread = thread
        thread.start()
        return handle

    def resume_download(self, name: str, *, on_event: EventCallback | None = None) -> DownloadHandle:
        """Resume an incomplete download (e.g. after the app restarted); partial files are reused."""
        model = self.find(name)
        repo_id = (model.repo_id if model is not None else None) or name
        return self.start_download(repo_id, on_event=on_event)

    def download(
        self,
        repo_id: str,
        *,
        revision: str = "main",
        on_event: EventCallback | None = None,
        quantize_bits: int | None = None,
        quantizer: Quantizer | None = None,
    ) -> LocalModel:
        """Blocking download: returns the installed model or raises DownloadError (code ``paused``/``cancelled``
        when stopped through the handle)."""
        handle = self.start_download(
            repo_id, revision=revision, on_event=on_event, quantize_bits=quantize_bits, quantizer=quantizer
        )
        final = handle.wait()
        if isinstance(final, DownloadCompleted):
            return final.model
        if isinstance(final, DownloadFailed):
            raise DownloadError(final.code, final.message)
        if isinstance(final, DownloadCancelled):
            raise DownloadError("paused" if final.paused else "cancelled", f"download of {repo_id} was stopped")
        raise DownloadError("internal", f"download of {repo_id} ended without a result")  # pragma: no cover

    def active_downloads(self) -> list[DownloadHandle]:
        with self._active_lock:
            return [h for h in self._active.values() if not h.done]

    def _finished(self, handle: DownloadHandle) -> None:
        with self._active_lock:
            if self._active.get(handle.repo_id) is handle:
                del self._active[handle.repo_id]

    def plan_download(self, repo_id: str, *, revision: str = "main") -> DownloadPlan:
        """Ask the Hub what downloading ``repo_id`` involves (files, sizes, commit) and check it is Olmo-3.

        Network only, nothing is written. Raises DownloadError (``not_found``, ``not_olmo3``, ``auth_required``,
        ``unsupported``, ``offline``, ``unreachable``...). The GUI can call it for a custom repo id to show the
        size and memory verdict before the user commits.
        """
        return Planner(self, validate_repo_id(repo_id), revision, threading.Event(), None).plan()

    # -- huggingface_hub plumbing ----------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        # Public API; huggingface_hub.utils lists it in a lazy-import facade that mypy cannot see re-exported.
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        from .. import __version__

        headers: dict[str, str] = build_hf_headers(
            token=self.token, library_name="olmo-desktop", library_version=__version__
        )
        return headers
