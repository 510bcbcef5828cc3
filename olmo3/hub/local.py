"""Models on this machine: the store's folders and their markers, Olmo-3 snapshots in the Hugging Face cache.

Our store keeps a model under ``<models dir>/<owner>/<name>``. A folder counts as installed only while its
marker (``.olmo-desktop.json``, written last, after every check passed) is valid and every file it lists is
present with its recorded size; otherwise it is listed as incomplete, with the download's progress read from
``.download/state.json`` and the ``.part`` files. Olmo-3 snapshots in the Hugging Face cache are offered in place
(their files stay where they are) once they pass the same verification as a download.

Listing never touches the network, and nothing here runs MLX.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from .. import appinfo
from ..fileio import read_json, write_atomic
from ..memory import MemoryBudget
from ..model.modelinfo import ModelInfo, ModelLoadError
from ..units import format_bytes
from .catalog import DEFAULT_CONTEXT_TOKENS, MemoryFit, estimate_memory_fit
from .planner import is_allowed
from .repo_ids import InvalidRepoIdError, validate_repo_id
from .verify import verify_model_folder

__all__ = [
    "DOWNLOAD_DIR",
    "LOCKS_DIR",
    "MARKER_FORMAT",
    "MARKER_NAME",
    "STATE_NAME",
    "LocalModel",
    "ModelBusyError",
    "ModelImportError",
    "ModelNotFoundError",
    "Source",
    "Status",
    "default_hf_cache_dir",
    "default_models_dir",
]

log = logging.getLogger(__name__)

MARKER_NAME: Final = ".olmo-desktop.json"  # written last: its presence (and validity) means "installed"
MARKER_FORMAT: Final = 1
DOWNLOAD_DIR: Final = ".download"  # partial files and the download state, inside the model folder
STATE_NAME: Final = "state.json"
LOCKS_DIR: Final = ".locks"

Status = Literal["installed", "incomplete"]
Source = Literal["download", "copy", "link", "hf_cache", "quantized", "unknown"]


class ModelBusyError(RuntimeError):
    """The model is being downloaded (here or by another process); pause or wait before deleting it."""


class ModelNotFoundError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "model not found"


class ModelImportError(ValueError):
    """A folder that cannot be imported (not a loadable Olmo-3 model, or the name is taken)."""


@dataclass(frozen=True)
class LocalModel:
    """A model folder on this machine: installed (verified) or an incomplete download."""

    name: str  # "owner/name": the repo id for downloads and HF-cache models, "local/<folder>" for imports
    path: Path
    status: Status
    source: Source
    repo_id: str | None = None
    revision: str | None = None  # commit sha
    size_bytes: int = 0  # installed: model files; incomplete: bytes downloaded so far
    total_bytes: int | None = None  # incomplete downloads: the expected total
    info: dict[str, Any] | None = None  # olmo3.model.modelinfo.ModelInfo.to_dict(), minus "path"
    downloaded_at: str | None = None
    origin: str | None = None  # imports: the folder it came from; quantized copies: the repo they were made from
    problem: str | None = None  # why it is not installed
    active: bool = False  # a download for it is running in this ModelStore

    @property
    def installed(self) -> bool:
        return self.status == "installed"

    def _info(self, key: str) -> Any:
        return (self.info or {}).get(key)

    @property
    def param_count(self) -> int | None:
        value = self._info("param_count")
        return int(value) if value is not None else None

    @property
    def weight_bytes(self) -> int | None:
        value = self._info("weight_bytes")
        return int(value) if value is not None else None

    @property
    def quantization(self) -> dict[str, Any] | None:
        value = self._info("quantization")
        return value if isinstance(value, dict) else None

    @property
    def is_think(self) -> bool:
        return bool(self._info("is_think")) or "think" in self.name.lower()

    @property
    def variant(self) -> str:
        n = self.name.lower()
        if "rlzero" in n or "rl-zero" in n:
            return "RL-Zero"
        if self.is_think:
            return "Think"
        if "instruct" in n:
            return "Instruct"
        return "Instruct" if self.info else "Unknown"

    @property
    def quant_label(self) -> str:
        q = self.quantization
        if q and q.get("bits"):
            return f"{q['bits']}-bit"
        if self.param_count and self.weight_bytes:
            return "fp32" if self.weight_bytes / self.param_count > 3 else "bf16"
        return "?"

    def memory_fit(
        self, context_tokens: int = DEFAULT_CONTEXT_TOKENS, budget: MemoryBudget | int | None = None
    ) -> MemoryFit | None:
        if not self.info:
            return None
        return estimate_memory_fit(
            weight_bytes=int(self._info("weight_bytes") or 0),
            kv_bytes_per_token_full=int(self._info("kv_bytes_per_token_full") or 0),
            kv_bytes_per_token_sliding=int(self._info("kv_bytes_per_token_sliding") or 0),
            sliding_window=int(self._info("sliding_window") or 0),
            context_tokens=context_tokens,
            budget=budget,
        )


# ---------------------------------------------------------------------------------------------------------------
# Folders and small files
# ---------------------------------------------------------------------------------------------------------------


def default_models_dir() -> Path:
    """``user_data_dir("Olmo Desktop")/models`` (``olmo3.appinfo.models_dir``)."""
    return appinfo.models_dir()


def default_hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment now (huggingface_hub reads it at import)."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(os.path.expandvars(env)).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(os.path.expandvars(home)).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def read_json_or_none(path: Path) -> Any:
    """A marker or download state, or None when it is missing, unreadable, too large or not JSON."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write via a temporary file + rename, so a crash never leaves a half-written marker or state."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))


def info_dict(info: ModelInfo, name: str | None = None) -> dict[str, Any]:
    """``ModelInfo`` as the marker stores it: JSON-safe, without the path, named ``name``."""
    d = info.to_dict()
    d.pop("path", None)
    if name is not None:
        d["name"] = name
    result: dict[str, Any] = json.loads(json.dumps(d, default=str))
    return result


def free_space(path: Path) -> int:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def owned_bytes(path: Path) -> int:
    """Bytes that deleting ``path`` frees: regular files only; symlinks (linked imports) free nothing."""
    total = 0
    for root, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            full = os.path.join(root, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if not os.path.islink(full):
                total += st.st_size
    return total


# ---------------------------------------------------------------------------------------------------------------
# Our store's folders
# ---------------------------------------------------------------------------------------------------------------


def scan_store(models_dir: Path, active: set[str]) -> list[LocalModel]:
    """Every ``<owner>/<name>`` folder under ``models_dir`` (installed or not); ``active``: names downloading."""
    out: list[LocalModel] = []
    if not models_dir.is_dir():
        return out
    for owner_dir in sorted(models_dir.iterdir()):
        if owner_dir.name.startswith(".") or not owner_dir.is_dir() or owner_dir.is_symlink():
            continue
        for d in sorted(owner_dir.iterdir()):
            if d.name.startswith(".") or not d.is_dir():
                continue
            try:
                name = validate_repo_id(f"{owner_dir.name}/{d.name}")
            except InvalidRepoIdError:
                continue
            out.append(describe_store_dir(name, d, active=name in active))
    return out


def describe_store_dir(name: str, path: Path, *, active: bool = False) -> LocalModel:
    """The model in one store folder: installed if its marker holds, else incomplete with the reason."""
    marker = read_json_or_none(path / MARKER_NAME)
    problem: str | None = None
    if marker is not None:
        problem = marker_problem(path, marker)
        if problem is None:
            files = marker["files"]
            return LocalModel(
                name=name,
                path=path,
                status="installed",
                source=marker.get("source", "download"),
                repo_id=marker.get("repo_id"),
                revision=marker.get("commit") or marker.get("revision"),
                size_bytes=sum(int(s) for s in files.values()),
                info=marker.get("info"),
                downloaded_at=marker.get("downloaded_at") or marker.get("imported_at"),
                origin=marker.get("origin"),
                active=active,
            )
    state = read_json_or_none(path / DOWNLOAD_DIR / STATE_NAME)
    done, total = partial_progress(path, state)
    if problem is None:
        if isinstance(state, dict) and total:
            pct = f"{100 * done / total:.0f}%"
            problem = f"download not finished: {pct} ({format_bytes(done)} of {format_bytes(total)})"
        else:
            problem = "not verified: no download record or marker in this folder"
    state = state if isinstance(state, dict) else {}
    return LocalModel(
        name=name,
        path=path,
        status="incomplete",
        source="download",
        repo_id=state.get("repo_id") or name,
        revision=state.get("commit"),
        size_bytes=done,
        total_bytes=total or None,
        problem=problem,
        active=active,
    )


def marker_problem(path: Path, marker: Any) -> str | None:
    """None if the marker is valid and every file it lists is present with its recorded size."""
    if (
        not isinstance(marker, dict)
        or marker.get("format") != MARKER_FORMAT
        or not isinstance(marker.get("files"), dict)
    ):
        return f"{path / MARKER_NAME} is not a valid Olmo Desktop marker"
    for fname, size in marker["files"].items():
        p = path / fname
        try:
            actual = p.stat().st_size
        except OSError:
            where = f" (linked from {marker.get('origin')})" if marker.get("source") == "link" else ""
            return f"{fname} is missing{where}"
        if actual != size:
            return f"{fname} has {actual:,} bytes, expected {int(size):,}"
    return None


def partial_progress(path: Path, state: Any) -> tuple[int, int]:
    """(bytes on disk, bytes expected) of an unfinished download, from its state file and ``.part`` files."""
    if not isinstance(state, dict) or not isinstance(state.get("files"), dict):
        return 0, 0
    done = total = 0
    for fname, rec in state["files"].items():
        size = int(rec.get("size", 0))
        total += size
        final, part = path / fname, path / DOWNLOAD_DIR / (fname + ".part")
        if rec.get("done") and final.is_file():
            done += size
        elif part.is_file():
            done += min(part.stat().st_size, size)
    return done, total


# ---------------------------------------------------------------------------------------------------------------
# The Hugging Face cache
# ---------------------------------------------------------------------------------------------------------------


def scan_hf_cache(hf_cache_dir: Path) -> list[LocalModel]:
    """Olmo-3 snapshots in the Hugging Face cache, offered in place (their files stay where they are)."""
    if not hf_cache_dir.is_dir():
        return []
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(hf_cache_dir)
    except (CacheNotFound, OSError, ValueError):
        log.debug("cannot scan HF cache %s", hf_cache_dir, exc_info=True)
        return []
    out: list[LocalModel] = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        rev = max(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
        snap = Path(rev.snapshot_path)
        config = read_json_or_none(snap / "config.json")
        if not isinstance(config, dict) or config.get("model_type") != "olmo3":
            continue
        try:
            name = validate_repo_id(repo.repo_id)
        except InvalidRepoIdError:
            continue
        size = sum(f.size_on_disk for f in rev.files if is_allowed(f.file_name))
        try:
            info = verify_model_folder(snap)
        except (ModelLoadError, ValueError, OSError) as e:
            out.append(
                LocalModel(
                    name=name,
                    path=snap,
                    status="incomplete",
                    source="hf_cache",
                    repo_id=name,
                    revision=rev.commit_hash,
                    size_bytes=size,
                    problem=f"in the Hugging Face cache but {e}",
                )
            )
            continue
        out.append(
            LocalModel(
                name=name,
                path=snap,
                status="installed",
                source="hf_cache",
                repo_id=name,
                revision=rev.commit_hash,
                size_bytes=size,
                info=info_dict(info, name.split("/")[1]),
            )
        )
    return out


def delete_from_hf_cache(hf_cache_dir: Path, model: LocalModel) -> int:
    """Remove a model's revision with huggingface_hub's own cache deletion (blobs no other revision uses)."""
    from huggingface_hub import scan_cache_dir

    cache = scan_cache_dir(hf_cache_dir)
    strategy = cache.delete_revisions(str(model.revision))
    freed = int(strategy.expected_freed_size)
    strategy.execute()
    return freed
