"""The download job: one model's files fetched on a worker thread, resumable, hashed, verified, then installed.

Why downloads do not call ``hf_hub_download``: in huggingface_hub 2.x it writes each file to a process-unique
temporary name and deletes it on any failure, so an interrupted multi-gigabyte shard restarts from zero. We keep
``<model>/.download/<file>.part`` ourselves and let huggingface_hub do all the HTTP: ``HfApi.model_info`` (file list,
sizes, hashes, commit; see ``planner``), ``get_hf_file_metadata`` (HEAD ``/resolve``: ETag, size, CDN redirect) and
``http_get`` (GET with ``Range: bytes=<part size>-``, its own reconnects after a dropped stream). Each file is
compared with the size and hash the Hub reported; then the folder goes through ``verify.verify_model_folder``
and only then is the marker written that makes the model installed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shutil
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..appinfo import APP_NAME
from ..model.modelinfo import ModelInfo, ModelLoadError
from ..units import format_bytes
from .events import (
    DownloadCancelled,
    DownloadCompleted,
    DownloadError,
    DownloadEvent,
    DownloadFailed,
    DownloadHandle,
    DownloadProgress,
    DownloadRetrying,
    DownloadStarted,
    DownloadVerifying,
    FileCompleted,
    Quantizer,
    StopRequestedError,
)
from .local import (
    DOWNLOAD_DIR,
    MARKER_FORMAT,
    MARKER_NAME,
    STATE_NAME,
    LocalModel,
    describe_store_dir,
    info_dict,
    now_iso,
    read_json_or_none,
    write_json_atomic,
)
from .planner import DownloadPlan, Planner, RemoteFile, classify_error, same_origin
from .quantize_route import quantize_staged, quantized_bytes_estimate, quantized_name, remove_staging, staging_dir
from .verify import hash_file, verify_model_folder

if TYPE_CHECKING:
    from .model_store import ModelStore

__all__ = ["DownloadJob", "RetryPolicy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries after dropped connections and server errors. Attempts count only failures with no new bytes."""

    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    planning_attempts: int = 3  # before any file: fail fast when offline

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** max(0, attempt - 1)))


class _ProgressBar:
    """The tqdm stand-in http_get writes through: turns chunks into DownloadProgress and notices pause.

    http_get calls ``update(len(chunk))`` *before* writing the chunk; raising there (pause) leaves the partial
    file ending exactly after the last whole chunk written, so the next run resumes from its size.
    """

    def __init__(self, job: DownloadJob, file: RemoteFile, fh: IO[bytes], **_tqdm_kwargs: Any) -> None:
        self.job, self.file, self.fh = job, file, fh

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        self.job.on_chunk(self.file, self.fh.tell() + n)

    def close(self) -> None:
        pass


class DownloadJob:
    """Runs on the download thread: plan, fetch each file (resuming), verify, write the marker."""

    def __init__(
        self,
        store: ModelStore,
        handle: DownloadHandle,
        revision: str,
        after: DownloadHandle | None = None,
        *,
        quantize_bits: int | None = None,
        quantizer: Quantizer | None = None,
    ) -> None:
        self.after = after
        self.store = store
        self.handle = handle
        self.repo_id = handle.repo_id
        self.revision = revision
        self.stop = handle._stop
        # "Download and quantize" (quantize_route): the bf16 download goes to a hidden staging folder first.
        self.quantize_bits = quantize_bits
        self.quantizer = quantizer
        if quantize_bits is not None:
            self.dest = staging_dir(store.models_dir, self.repo_id)
        else:
            self.dest = store.model_dir(self.repo_id)
        self.dl_dir = self.dest / DOWNLOAD_DIR
        self.plan: DownloadPlan | None = None
        self.state: dict[str, Any] = {}
        self.done_before_file = 0  # bytes of completed files
        self.file_done = 0
        self.session_bytes = 0  # received in this run (speed)
        self.samples: deque[tuple[float, int]] = deque()
        self.last_emit = 0.0

    # -- events ----------------------------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return self.plan.total_bytes if self.plan else 0

    @property
    def done(self) -> int:
        return self.done_before_file + self.file_done

    def emit(self, event: DownloadEvent) -> None:
        self.handle._emit(event)

    def on_chunk(self, file: RemoteFile, file_done: int) -> None:
        if self.stop.is_set():
            raise StopRequestedError()
        delta = file_done - self.file_done
        self.file_done = file_done
        self.session_bytes += max(0, delta)
        now = time.monotonic()
        self.samples.append((now, self.session_bytes))
        while len(self.samples) > 2 and now - self.samples[1][0] >= 5.0:
            self.samples.popleft()
        if now - self.last_emit >= self.store.progress_interval_s or file_done >= file.size:
            self.last_emit = now
            self._emit_progress(file, now)

    def _emit_progress(self, file: RemoteFile, now: float) -> None:
        speed = eta = None
        t0, b0 = self.samples[0] if self.samples else (now, self.session_bytes)
        if now - t0 >= 0.5:
            speed = (self.session_bytes - b0) / (now - t0)
            if speed > 0:
                eta = (self.total - self.done) / speed
        self.emit(
            DownloadProgress(
                repo_id=self.repo_id,
                file=file.name,
                file_done=self.file_done,
                file_total=file.size,
                done_bytes=self.done,
                total_bytes=self.total,
                speed_bps=speed,
                eta_s=eta,
            )
        )

    # -- the run ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        final: DownloadEvent
        if self.after is not None:
            self.after.wait()
        try:
            with self.store._model_lock(self.repo_id) as locked:
                if not locked:
                    raise DownloadError(
                        "busy",
                        f"{self.repo_id} is already being downloaded by another Olmo Desktop window or "
                        "`olmo3 models download`; wait for it to finish or stop it first",
                    )
                try:
                    final = self._run_locked()
                except StopRequestedError:
                    final = self._stopped()
        except DownloadError as e:
            final = DownloadFailed(
                repo_id=self.repo_id, code=e.code, message=e.message, done_bytes=self.done, total_bytes=self.total
            )
        except Exception as e:
            log.exception("download of %s failed", self.repo_id)
            _t, err = classify_error(e, self.store.endpoint, self.repo_id)
            final = DownloadFailed(
                repo_id=self.repo_id, code=err.code, message=err.message, done_bytes=self.done, total_bytes=self.total
            )
        self.store._finished(self.handle)
        self.handle._finish(final)

    def _stopped(self) -> DownloadCancelled:
        mode = self.handle._stop_mode or "pause"
        discarded = False
        if mode == "discard" and self.quantize_bits is not None:
            remove_staging(self.dest)  # the bf16 copy was only ever a step on the way
            discarded = True
        elif mode == "discard" and self.dest.is_dir() and not (self.dest / MARKER_NAME).exists():
            shutil.rmtree(self.dest, ignore_errors=True)
            with suppress(OSError):
                self.dest.parent.rmdir()
            discarded = True
        return DownloadCancelled(
            repo_id=self.repo_id,
            paused=mode == "pause",
            discarded=discarded,
            done_bytes=0 if discarded else self.done,
            total_bytes=self.total,
        )

    def _run_locked(self) -> DownloadEvent:
        if self.quantize_bits is not None:
            name = quantized_name(self.repo_id, self.quantize_bits)
            final = self.store.model_dir(name)
            done = describe_store_dir(name, final) if final.is_dir() else None
            if done is not None and done.installed:
                return DownloadCompleted(repo_id=self.repo_id, model=done, already_installed=True)
        existing = describe_store_dir(self.repo_id, self.dest) if self.dest.is_dir() else None
        if existing is not None and existing.installed:
            if self.quantize_bits is None:
                return DownloadCompleted(repo_id=self.repo_id, model=existing, already_installed=True)
            self.state = {"commit": existing.revision}  # downloaded before: quantize what is there
            return DownloadCompleted(repo_id=self.repo_id, model=self._quantize())
        self._download()
        if self.quantize_bits is not None:
            return DownloadCompleted(repo_id=self.repo_id, model=self._quantize())
        model = dataclasses.replace(describe_store_dir(self.repo_id, self.dest), active=False)
        return DownloadCompleted(repo_id=self.repo_id, model=model)

    def _quantize(self) -> LocalModel:
        if self.quantizer is None or self.quantize_bits is None:
            raise DownloadError("internal", f"{self.repo_id}: asked to quantize without a quantizer")
        return quantize_staged(self, self.quantizer, self.quantize_bits)

    def _download(self) -> None:
        """Plan, fetch every file (resuming), verify the folder, write its marker."""
        self.plan = plan = Planner(self.store, self.repo_id, self.revision, self.stop, self.emit).plan()
        self._load_state()
        self._check_disk_space()
        self.dl_dir.mkdir(parents=True, exist_ok=True)
        self._save_state()
        self.done_before_file = 0
        self.emit(
            DownloadStarted(
                repo_id=self.repo_id,
                commit=plan.commit,
                files=tuple(f.name for f in plan.files),
                total_bytes=plan.total_bytes,
                done_bytes=self._bytes_on_disk(),
            )
        )
        for f in plan.files:
            self._download_file(f)
            self.done_before_file += f.size
            self.file_done = 0

        self.emit(DownloadVerifying(repo_id=self.repo_id, file=None))
        info = self._verify_folder()
        marker = {
            "format": MARKER_FORMAT,
            "app": APP_NAME,
            "name": self.repo_id,
            "repo_id": self.repo_id,
            "ref": self.revision,
            "revision": plan.commit,
            "commit": plan.commit,
            "source": "download",
            "endpoint": self.store.endpoint,
            "files": {f.name: f.size for f in plan.files},
            "downloaded_at": now_iso(),
            "info": {**info_dict(info, self.dest.name), "revision": plan.commit},
        }
        write_json_atomic(self.dest / MARKER_NAME, marker)
        shutil.rmtree(self.dl_dir, ignore_errors=True)

    # -- state -----------------------------------------------------------------------------------------------
    def _load_state(self) -> None:
        """Reuse partial files from an earlier run when they belong to the same files (same ETag/hash)."""
        assert self.plan is not None
        old = read_json_or_none(self.dl_dir / STATE_NAME)
        old_files = old.get("files", {}) if isinstance(old, dict) else {}
        files: dict[str, Any] = {}
        for f in self.plan.files:
            rec = old_files.get(f.name) if isinstance(old_files, dict) else None
            key = f.sha256 or f.blob_id
            if isinstance(rec, dict) and rec.get("key") == key and rec.get("size") == f.size:
                files[f.name] = rec
            else:  # unknown or changed upstream: start this file over
                (self.dl_dir / (f.name + ".part")).unlink(missing_ok=True)
                files[f.name] = {"size": f.size, "key": key, "done": False}
        started_at = old.get("started_at") if isinstance(old, dict) else None
        self.state = {
            "format": 1,
            "repo_id": self.repo_id,
            "ref": self.revision,
            "commit": self.plan.commit,
            "endpoint": self.store.endpoint,
            "started_at": started_at or now_iso(),
            "files": files,
        }

    def _save_state(self) -> None:
        write_json_atomic(self.dl_dir / STATE_NAME, self.state)

    def _file_complete(self, f: RemoteFile) -> bool:
        rec = self.state["files"][f.name]
        final = self.dest / f.name
        return bool(rec.get("done")) and final.is_file() and final.stat().st_size == f.size

    def _bytes_on_disk(self) -> int:
        assert self.plan is not None
        done = 0
        for f in self.plan.files:
            part = self.dl_dir / (f.name + ".part")
            if self._file_complete(f):
                done += f.size
            elif part.is_file():
                done += min(part.stat().st_size, f.size)
        return done

    def _check_disk_space(self) -> None:
        """The rest of the download, plus (download and quantize) the quantized copy written beside it."""
        assert self.plan is not None
        needed = self.plan.total_bytes - self._bytes_on_disk()
        both = ""
        if self.quantize_bits is not None:
            copy = quantized_bytes_estimate(self.plan.weight_bytes, self.quantize_bits)
            copy += self.plan.total_bytes - self.plan.weight_bytes
            needed += copy
            both = f", counting the {format_bytes(copy)} {self.quantize_bits}-bit copy made from it,"
        where = self.dest if self.dest.exists() else self.store.models_dir
        free = int(self.store.free_space_fn(where))
        if needed > free:
            raise DownloadError(
                "disk_full",
                f"not enough disk space for {self.repo_id}: it needs {format_bytes(needed)} more "
                f"({needed:,} bytes){both} but only {format_bytes(free)} ({free:,} bytes) is free at {where}",
            )

    # -- one file --------------------------------------------------------------------------------------------
    def _download_file(self, f: RemoteFile) -> None:
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get

        if self.stop.is_set():
            raise StopRequestedError()
        if self._file_complete(f):
            self.file_done = f.size
            return
        final = self.dest / f.name
        part = self.dl_dir / (f.name + ".part")
        # http_get reads in chunks of this size and calls the progress bar once per chunk; the default (10 MB)
        # would make pause and progress lag on slow links. Global to huggingface_hub, harmless for others.
        constants.DOWNLOAD_CHUNK_SIZE = self.store.chunk_size
        url = hf_hub_url(
            self.repo_id, f.name, revision=self.plan.commit if self.plan else None, endpoint=self.store.endpoint
        )
        attempt = 0
        corrupt_retries = 0
        while True:
            on_disk_before = part.stat().st_size if part.exists() else 0
            try:
                headers = self.store._headers()
                meta = get_hf_file_metadata(url, token=self.store.token, headers=headers, endpoint=self.store.endpoint)
                if meta.size is not None and meta.size != f.size:
                    raise DownloadError(
                        "bad_repo", f"{f.name}: the Hub lists {f.size:,} bytes but the file has {meta.size:,}"
                    )
                if not same_origin(url, meta.location):
                    headers.pop("authorization", None)  # never send the token to the CDN
                with open(part, "r+b" if part.exists() else "wb") as fh:
                    fh.seek(0, os.SEEK_END)
                    start = fh.tell()
                    if start > f.size:
                        fh.truncate(0)
                        fh.seek(0)
                        start = 0
                    self.file_done = start
                    if start < f.size:
                        # http_get calls tqdm_class(...) like a class; a partial stands in for one.
                        bar: Any = functools.partial(_ProgressBar, self, f, fh)
                        http_get(
                            meta.location,
                            fh,
                            resume_size=start,
                            headers=headers,
                            expected_size=f.size,
                            displayed_filename=f.name,
                            tqdm_class=bar,
                        )
                    fh.flush()
                    os.fsync(fh.fileno())
                if not self._hash_ok(f, part):
                    part.unlink()
                    corrupt_retries += 1
                    if corrupt_retries > 1:
                        raise DownloadError(
                            "verify_failed", f"{f.name} did not match the hash the Hub reported, twice; not installed"
                        )
                    continue
                break
            except (StopRequestedError, DownloadError):
                raise
            except Exception as e:
                transient, err = classify_error(e, self.store.endpoint, self.repo_id)
                if err.code == "disk_full":
                    raise DownloadError(
                        "disk_full",
                        f"the disk filled up while downloading {f.name}; free some space and start the download "
                        f"again to resume ({format_bytes(self.done)} kept)",
                    ) from e
                if not transient:
                    raise err from e
                on_disk_after = part.stat().st_size if part.exists() else 0
                attempt = 0 if on_disk_after > on_disk_before else attempt + 1
                if attempt >= self.store.retry.max_attempts:
                    raise DownloadError(
                        "unreachable",
                        f"gave up on {f.name} after {attempt} attempts without progress ({err.message}); "
                        f"the {format_bytes(self.done)} downloaded so far are kept: start again to resume",
                    ) from e
                delay = self.store.retry.delay(max(1, attempt))
                self.emit(
                    DownloadRetrying(
                        repo_id=self.repo_id, file=f.name, attempt=max(1, attempt), delay_s=delay, reason=err.message
                    )
                )
                if self.stop.wait(delay):
                    raise StopRequestedError() from None
        os.replace(part, final)
        self.state["files"][f.name]["done"] = True
        self._save_state()
        self.file_done = f.size
        self.emit(FileCompleted(repo_id=self.repo_id, file=f.name, size=f.size))

    def _hash_ok(self, f: RemoteFile, part: Path) -> bool:
        """Compare with the hash the Hub reported: sha256 for LFS files, the git blob sha1 for small ones."""
        if part.stat().st_size != f.size:
            return False
        if f.sha256:
            self.emit(DownloadVerifying(repo_id=self.repo_id, file=f.name))
            return hash_file(part, "sha256", stop=self.stop) == f.sha256.lower()
        if f.blob_id:
            return hash_file(part, "sha1", git_blob=True, stop=self.stop) == f.blob_id.lower()
        return True

    # -- verification ----------------------------------------------------------------------------------------
    def _verify_folder(self) -> ModelInfo:
        """Every planned file is there with its size, and the folder passes ``verify_model_folder``."""
        assert self.plan is not None
        try:
            for f in self.plan.files:
                p = self.dest / f.name
                if not p.is_file() or p.stat().st_size != f.size:
                    raise ValueError(f"{f.name} is missing or has the wrong size")
            return verify_model_folder(self.dest)
        except (ModelLoadError, ValueError) as e:
            raise DownloadError("verify_failed", f"{self.repo_id} downloaded but does not load: {e}") from e
