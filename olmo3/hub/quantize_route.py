"""Download and quantize: Ai2's bf16 repos fetched to a staging folder, converted here, verified, installed.

Ai2 publishes Olmo-3 as bf16 safetensors in transformers' format, which our loader reads; a 7B model is 14.6 GB
that way and 4.1 GB at 4 bits. This route always exists, whatever conversions others have published:

1. the bf16 repo is downloaded like any other (resumable, hashed, verified) into a staging folder,
   ``<models>/.staging/<owner>/<name>``, hidden from the model list (``ModelStore.staged`` reports it);
2. the quantized copy is written beside the final place (``<models>/<owner>/.<name>-4bit.quantizing-…``) by a
   ``Quantizer`` the caller hands in: quantizing needs MLX, which the hub never imports (the app runs it as an
   engine job, on the one thread that runs MLX);
3. the copy is verified like a download (``verify.verify_model_folder``), gets its marker (``source``
   ``"quantized"``, ``repo_id`` the Ai2 repo it came from) and is renamed to ``<models>/<owner>/<name>-4bit``
   (``quantized_name``); then the staging folder is deleted.

The free-space check before the download counts both copies. Pause and cancel work in both phases: the
quantizer asks ``should_stop`` between layers. A paused route keeps its staging folder; running it again skips
what is done (a finished bf16 download is not fetched again).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..appinfo import APP_NAME
from ..model.modelinfo import ModelLoadError
from ..units import format_bytes
from .events import DownloadError, DownloadQuantizing, DownloadVerifying, Quantizer, StopRequestedError
from .local import MARKER_FORMAT, MARKER_NAME, LocalModel, describe_store_dir, info_dict, now_iso, write_json_atomic
from .repo_ids import validate_repo_id
from .verify import verify_model_folder

if TYPE_CHECKING:
    from .download import DownloadJob

__all__ = [
    "STAGING_DIR",
    "quantize_staged",
    "quantized_bytes_estimate",
    "quantized_name",
    "staging_dir",
]

STAGING_DIR: Final = ".staging"
GROUP_SIZE: Final = 64


def quantized_name(repo_id: str, bits: int) -> str:
    """``allenai/Olmo-3-7B-Instruct`` → ``allenai/Olmo-3-7B-Instruct-4bit``: the installed copy's name."""
    return validate_repo_id(f"{validate_repo_id(repo_id)}-{bits}bit")


def staging_dir(models_dir: Path, repo_id: str) -> Path:
    owner, name = validate_repo_id(repo_id).split("/")
    return models_dir / STAGING_DIR / owner / name


def quantized_bytes_estimate(bf16_weight_bytes: int, bits: int, group_size: int = GROUP_SIZE) -> int:
    """What ``bf16_weight_bytes`` of weights take after MLX affine quantization (bf16 scale and bias per group)."""
    return int(bf16_weight_bytes / 2 * (bits / 8 + 4 / group_size))


def quantize_staged(job: DownloadJob, quantizer: Quantizer, bits: int) -> LocalModel:
    """Phase 2 and 3 (module docstring) for a finished staging download; returns the installed model."""
    src = job.dest
    name = quantized_name(job.repo_id, bits)
    final = job.store.model_dir(name)
    if final.exists():
        raise DownloadError(
            "io_error", f"{final} already exists; delete {name} first to make a new {bits}-bit copy of {job.repo_id}"
        )
    weights = sum(p.stat().st_size for p in src.glob("*.safetensors"))
    others = sum(p.stat().st_size for p in src.iterdir() if p.is_file() and not p.name.endswith(".safetensors"))
    needed = quantized_bytes_estimate(weights, bits) + others
    final.parent.mkdir(parents=True, exist_ok=True)
    free = int(job.store.free_space_fn(final.parent))
    if needed > free:
        raise DownloadError(
            "disk_full",
            f"not enough disk space to write the {bits}-bit copy of {job.repo_id}: it needs about "
            f"{format_bytes(needed)} but only {format_bytes(free)} is free at {final.parent}",
        )
    tmp = final.parent / f".{final.name}.quantizing-{uuid.uuid4().hex[:8]}"

    def progress(done: int, total: int, what: str) -> None:
        job.emit(DownloadQuantizing(repo_id=job.repo_id, bits=bits, done_steps=done, total_steps=total, what=what))

    progress(0, 1, "starting")
    try:
        try:
            quantizer(src, tmp, bits=bits, on_progress=progress, should_stop=job.stop.is_set)
        except Exception as e:
            if job.stop.is_set():
                raise StopRequestedError() from e
            raise DownloadError("quantize_failed", f"quantizing {job.repo_id} to {bits} bits failed: {e}") from e
        if job.stop.is_set():
            raise StopRequestedError()
        job.emit(DownloadVerifying(repo_id=job.repo_id, file=None))
        try:
            info = verify_model_folder(tmp)
        except (ModelLoadError, ValueError) as e:
            raise DownloadError("verify_failed", f"the {bits}-bit copy of {job.repo_id} does not load: {e}") from e
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        commit = job.plan.commit if job.plan is not None else job.state.get("commit")
        marker = {
            "format": MARKER_FORMAT,
            "app": APP_NAME,
            "name": name,
            "repo_id": job.repo_id,
            "ref": job.revision,
            "revision": commit,
            "commit": commit,
            "source": "quantized",
            "origin": job.repo_id,
            "quantized_bits": bits,
            "endpoint": job.store.endpoint,
            "files": files,
            "downloaded_at": now_iso(),
            "info": {**info_dict(info, final.name), "revision": commit},
        }
        write_json_atomic(tmp / MARKER_NAME, marker)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    remove_staging(src)
    return dataclasses.replace(describe_store_dir(name, final), active=False)


def remove_staging(path: Path) -> None:
    """Delete a staging folder and its empty parents up to the staging root."""
    shutil.rmtree(path, ignore_errors=True)
    for parent in (path.parent, path.parent.parent):
        if parent.name == STAGING_DIR or parent.parent.name == STAGING_DIR:
            try:
                parent.rmdir()
            except OSError:
                break
