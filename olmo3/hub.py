"""The model manager: where Olmo-3 models live on disk, the curated catalog, downloads, import and delete.

Qt-free and print-free, so the GUI's model picker and the ``olmo3 models`` CLI drive the same code:

* ``ModelStore`` lists installed models (our store under ``user_data_dir("Olmo Desktop")/models/<owner>/<name>`` and
  Olmo-3 snapshots already in the Hugging Face cache, used in place), downloads, imports and deletes them.
* ``CATALOG`` holds the Olmo-3 / 3.1 MLX conversions with sizes computed from the architecture, and
  ``estimate_memory_fit`` says whether weights + KV cache at a context length fit this machine.
* Downloads run on a worker thread and report ``DownloadEvent`` dataclasses to callbacks (called on that thread:
  a GUI re-emits them as signals); ``DownloadHandle.pause()`` / ``.cancel()`` work from any thread.

Why downloads do not call ``hf_hub_download``: in huggingface_hub 2.x it writes each file to a process-unique
temporary name and deletes it on any failure, so an interrupted multi-gigabyte shard restarts from zero. We keep
``<model>/.download/<file>.part`` ourselves and let huggingface_hub do all the HTTP: ``HfApi.model_info`` (file list,
sizes, hashes, commit), ``get_hf_file_metadata`` (HEAD ``/resolve``: ETag, size, CDN redirect) and ``http_get``
(GET with ``Range: bytes=<part size>-``, its own reconnects after a dropped stream). A model is listed as installed
only when ``.olmo-desktop.json`` exists, which is written after every file matched the size and hash the Hub
reported and the folder passed ``olmo3.model.modelinfo.inspect_model_dir``.
"""

from __future__ import annotations

import dataclasses
import errno
import fnmatch
import functools
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from .fileio import write_atomic

try:  # macOS and Linux; the app does not run elsewhere
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from .model.modelinfo import ModelInfo

log = logging.getLogger(__name__)

APP_NAME = "Olmo Desktop"
MARKER_NAME = ".olmo-desktop.json"  # written last: its presence (and validity) means "installed"
MARKER_FORMAT = 1
DOWNLOAD_DIR = ".download"  # partial files and the download state, inside the model folder
STATE_NAME = "state.json"
LOCKS_DIR = ".locks"
DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_CONTEXT_TOKENS = 8192

# What a download fetches: weights, config, tokenizer, chat template. Never code (*.py) or pickles (*.bin, *.pt).
ALLOW_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)

Status = Literal["installed", "incomplete"]
Source = Literal["download", "copy", "link", "hf_cache", "unknown"]
Verdict = Literal["fits", "tight", "wont_fit"]


# ---------------------------------------------------------------------------------------------------------------
# Repo ids
# ---------------------------------------------------------------------------------------------------------------

MAX_REPO_PART_LEN = 96
_REPO_PART_CHARS = re.compile(r"[A-Za-z0-9._-]+")


class InvalidRepoId(ValueError):
    """A repo id or model name that is not a plain ``owner/name``; raised before any path is built from it."""


def validate_repo_id(repo_id: object) -> str:
    """Return ``repo_id`` (surrounding spaces removed) if it is a safe ``owner/name``, else raise InvalidRepoId.

    Both parts: 1-96 characters from ``A-Z a-z 0-9 . _ -``, not starting or ending with ``.`` or ``-``, no ``..``
    and no ``--`` (the Hub forbids both). This rules out absolute paths, ``..`` traversal, drive letters,
    backslashes and URL syntax, so ``models_dir / owner / name`` always stays inside ``models_dir``.
    """
    if not isinstance(repo_id, str):
        raise InvalidRepoId(f"repo id must be text like 'owner/name', got {type(repo_id).__name__}")
    text = repo_id.strip()
    example = "e.g. mlx-community/Olmo-3-7B-Instruct-4bit"
    if not text:
        raise InvalidRepoId(f"repo id is empty: expected 'owner/name', {example}")
    if text.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", text):
        raise InvalidRepoId(f"repo id {text!r} looks like a file path: expected 'owner/name', {example}")
    if "\\" in text:
        raise InvalidRepoId(f"repo id {text!r} contains a backslash: expected 'owner/name', {example}")
    if ".." in text:
        raise InvalidRepoId(f"repo id {text!r}: '..' is not allowed (expected 'owner/name', {example})")
    parts = text.split("/")
    if len(parts) != 2:
        raise InvalidRepoId(f"repo id {text!r} must have exactly one '/' (owner/name), {example}")
    for label, part in zip(("owner", "name"), parts):
        if not part:
            raise InvalidRepoId(f"repo id {text!r} has an empty {label}")
        if "--" in part:
            raise InvalidRepoId(f"repo id {text!r}: '--' is not allowed in the {label}")
        if len(part) > MAX_REPO_PART_LEN:
            raise InvalidRepoId(f"repo id {text!r}: the {label} is longer than {MAX_REPO_PART_LEN} characters")
        if not _REPO_PART_CHARS.fullmatch(part):
            bad = sorted({c for c in part if not _REPO_PART_CHARS.fullmatch(c)})
            shown = " ".join(repr(c) for c in bad)
            raise InvalidRepoId(
                f"repo id {text!r}: the {label} may only use letters, digits, '.', '_' and '-' (found {shown})"
            )
        if part[0] in ".-" or part[-1] in ".-":
            raise InvalidRepoId(f"repo id {text!r}: the {label} may not start or end with '.' or '-'")
    return text


def repo_id_from_text(text: str) -> str:
    """Accept what users paste: ``owner/name`` or a ``https://huggingface.co/owner/name[/tree/main...]`` URL."""
    t = text.strip()
    m = re.match(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/(.*)$", t)
    if m:
        rest = m.group(1).split("?")[0].split("#")[0].strip("/").split("/")
        t = "/".join(rest[:2])
    return validate_repo_id(t)


# ---------------------------------------------------------------------------------------------------------------
# Sizes and memory
# ---------------------------------------------------------------------------------------------------------------


def format_bytes(n: int | float | None) -> str:
    """Decimal units as Finder shows them: ``4.11 GB``, ``795 kB``."""
    if n is None:
        return "?"
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            if unit == "B":
                return f"{int(n)} B"
            return f"{n:.2f} {unit}" if abs(n) < 10 else f"{n:.1f} {unit}" if abs(n) < 100 else f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.0f} TB"  # pragma: no cover


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass(frozen=True)
class MemoryBudget:
    """How much memory models may use here. On Apple silicon: MLX's recommended GPU working set."""

    bytes: int
    source: Literal["mlx_working_set", "ram_fraction", "given"]
    physical_bytes: int | None = None

    def describe(self) -> str:
        if self.source == "mlx_working_set":
            return f"{format_bytes(self.bytes)} (the GPU working set macOS recommends)"
        if self.source == "ram_fraction" and self.physical_bytes:
            return f"{format_bytes(self.bytes)} (75% of {format_bytes(self.physical_bytes)} RAM)"
        return format_bytes(self.bytes)


def physical_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    if sys.platform == "darwin":  # pragma: no cover - sysconf works on macOS; belt and braces
        import subprocess

        try:
            return int(subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True).stdout)
        except (OSError, ValueError):
            return None
    return None


@functools.lru_cache(maxsize=1)
def memory_budget() -> MemoryBudget:
    """MLX's ``max_recommended_working_set_size`` where Metal reports it, else 75% of physical RAM."""
    physical = physical_memory_bytes()
    if sys.platform == "darwin":
        try:
            import mlx.core as mx

            info = mx.device_info() if hasattr(mx, "device_info") else mx.metal.device_info()
            ws = int(info.get("max_recommended_working_set_size", 0))
            if ws > 0:
                return MemoryBudget(ws, "mlx_working_set", physical)
        except Exception:  # no Metal device (CI, Rosetta): fall back to RAM
            log.debug("MLX device info unavailable", exc_info=True)
    return MemoryBudget(int((physical or 8 * 1024**3) * 0.75), "ram_fraction", physical)


def kv_cache_bytes(
    tokens: int, kv_bytes_per_token_full: int, kv_bytes_per_token_sliding: int, sliding_window: int
) -> int:
    """Olmo-3's hybrid cache: full-attention layers keep every token, sliding layers at most ``sliding_window``."""
    return kv_bytes_per_token_full * tokens + kv_bytes_per_token_sliding * min(tokens, sliding_window)


RUNTIME_OVERHEAD_BYTES = 512 * 1024**2  # MLX runtime, Python, tokenizer, prefill activations (rough)
TIGHT_FRACTION = 0.85  # above this share of the budget a model "fits" only with other apps closed


@dataclass(frozen=True)
class MemoryFit:
    verdict: Verdict
    weight_bytes: int
    kv_bytes: int
    overhead_bytes: int
    needed_bytes: int
    budget_bytes: int
    context_tokens: int
    message: str

    @property
    def label(self) -> str:
        return {"fits": "fits", "tight": "tight", "wont_fit": "won't fit"}[self.verdict]


def estimate_memory_fit(
    *,
    weight_bytes: int,
    kv_bytes_per_token_full: int,
    kv_bytes_per_token_sliding: int,
    sliding_window: int,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    budget: MemoryBudget | int | None = None,
) -> MemoryFit:
    """Weights + KV cache at ``context_tokens`` (+ a fixed runtime allowance) against the memory budget."""
    if budget is None:
        budget = memory_budget()
    elif isinstance(budget, int):
        budget = MemoryBudget(budget, "given")
    kv = kv_cache_bytes(context_tokens, kv_bytes_per_token_full, kv_bytes_per_token_sliding, sliding_window)
    overhead = RUNTIME_OVERHEAD_BYTES + weight_bytes // 20
    needed = weight_bytes + kv + overhead
    parts = (
        f"{format_bytes(weight_bytes)} weights + {format_bytes(kv)} conversation memory at "
        f"{context_tokens:,} tokens + {format_bytes(overhead)} runtime"
    )
    if needed <= TIGHT_FRACTION * budget.bytes:
        verdict: Verdict = "fits"
        message = f"Fits: needs about {format_bytes(needed)} ({parts}) of {budget.describe()}."
    elif needed <= budget.bytes:
        verdict = "tight"
        message = (
            f"Tight: needs about {format_bytes(needed)} ({parts}) of {budget.describe()}; "
            "close other apps or use a shorter context."
        )
    else:
        verdict = "wont_fit"
        message = (
            f"Won't fit: needs about {format_bytes(needed)} ({parts}) but only {budget.describe()} is available; "
            "choose a smaller quantization or a shorter context."
        )
    return MemoryFit(verdict, weight_bytes, kv, overhead, needed, budget.bytes, context_tokens, message)


# ---------------------------------------------------------------------------------------------------------------
# Catalog
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """The shape of an Olmo-3 size, from its config.json (notes §2); sizes below are computed from it."""

    label: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int = 100278
    sliding_window: int = 4096
    full_every: int = 4  # layer_types: three sliding layers, then one full, repeating
    max_position_embeddings: int = 65536

    @property
    def matrix_params(self) -> int:
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        per_layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate_size
        return 2 * self.vocab_size * h + self.num_layers * per_layer  # untied embeddings + lm_head

    @property
    def norm_params(self) -> int:
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return self.num_layers * (2 * h + q + kv) + h

    @property
    def param_count(self) -> int:
        return self.matrix_params + self.norm_params

    def weight_bytes(self, bits: int | None, group_size: int = 64) -> int:
        """bf16 when ``bits`` is None; else MLX affine quantization with bf16 scales and biases per group."""
        if bits is None:
            return 2 * self.param_count
        per_param = bits / 8 + 4 / group_size
        return int(self.matrix_params * per_param) + 2 * self.norm_params

    @property
    def full_layers(self) -> int:
        return self.num_layers // self.full_every

    @property
    def kv_bytes_per_token_full(self) -> int:
        return self.full_layers * 2 * self.num_kv_heads * self.head_dim * 2

    @property
    def kv_bytes_per_token_sliding(self) -> int:
        return (self.num_layers - self.full_layers) * 2 * self.num_kv_heads * self.head_dim * 2


OLMO3_7B = Architecture("7B", 4096, 32, 32, 32, 128, 11008)
OLMO3_32B = Architecture("32B", 5120, 64, 40, 8, 128, 27648)
TOKENIZER_AND_CONFIG_BYTES = 7_300_000  # tokenizer.json is 7.14 MB; configs and template add a few kB


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable conversion. ``known`` is False where the repo name is inferred, not confirmed."""

    repo_id: str
    family: str  # "Olmo 3" or "Olmo 3.1"
    arch: Architecture
    variant: str  # "Instruct", "Think", "RL-Zero Code", ...
    quant: Literal["4bit", "8bit", "bf16"]
    known: bool
    note: str = ""

    @property
    def size_label(self) -> str:
        return self.arch.label

    @property
    def bits(self) -> int | None:
        return {"4bit": 4, "8bit": 8, "bf16": None}[self.quant]

    @property
    def quant_label(self) -> str:
        return {"4bit": "4-bit", "8bit": "8-bit", "bf16": "bf16"}[self.quant]

    @property
    def title(self) -> str:
        return f"{self.family} {self.arch.label} {self.variant} · {self.quant_label}"

    @property
    def param_count(self) -> int:
        return self.arch.param_count

    @property
    def weight_bytes(self) -> int:
        return self.arch.weight_bytes(self.bits)

    @property
    def download_bytes(self) -> int:
        return self.weight_bytes + TOKENIZER_AND_CONFIG_BYTES

    @property
    def is_think(self) -> bool:
        return self.variant == "Think"

    def memory_fit(
        self, context_tokens: int = DEFAULT_CONTEXT_TOKENS, budget: MemoryBudget | int | None = None
    ) -> MemoryFit:
        return estimate_memory_fit(
            weight_bytes=self.weight_bytes,
            kv_bytes_per_token_full=self.arch.kv_bytes_per_token_full,
            kv_bytes_per_token_sliding=self.arch.kv_bytes_per_token_sliding,
            sliding_window=self.arch.sliding_window,
            context_tokens=context_tokens,
            budget=budget,
        )


_INFERRED = "repo name inferred from mlx-community's naming; not confirmed to exist"
CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry("mlx-community/Olmo-3-7B-Instruct-4bit", "Olmo 3", OLMO3_7B, "Instruct", "4bit", True),
    CatalogEntry("mlx-community/Olmo-3-7B-Instruct-8bit", "Olmo 3", OLMO3_7B, "Instruct", "8bit", False, _INFERRED),
    CatalogEntry("mlx-community/Olmo-3-7B-Instruct-bf16", "Olmo 3", OLMO3_7B, "Instruct", "bf16", True),
    CatalogEntry("mlx-community/Olmo-3-7B-Think-4bit", "Olmo 3", OLMO3_7B, "Think", "4bit", False, _INFERRED),
    CatalogEntry("mlx-community/Olmo-3-7B-Think-8bit", "Olmo 3", OLMO3_7B, "Think", "8bit", False, _INFERRED),
    CatalogEntry("mlx-community/Olmo-3-7B-Think-bfloat16", "Olmo 3", OLMO3_7B, "Think", "bf16", True),
    CatalogEntry(
        "mlx-community/Olmo-3-7B-RLZero-Code-4bit",
        "Olmo 3",
        OLMO3_7B,
        "RL-Zero Code",
        "4bit",
        True,
        "research model: RL from the base model, no chat tuning",
    ),
    CatalogEntry(
        "mlx-community/Olmo-3-7B-RLZero-Math-4bit",
        "Olmo 3",
        OLMO3_7B,
        "RL-Zero Math",
        "4bit",
        False,
        "research model; " + _INFERRED,
    ),
    CatalogEntry(
        "lmstudio-community/Olmo-3.1-32B-Instruct-MLX-4bit",
        "Olmo 3.1",
        OLMO3_32B,
        "Instruct",
        "4bit",
        False,
        "repo name inferred from lmstudio-community's 8-bit conversion; not confirmed to exist",
    ),
    CatalogEntry("lmstudio-community/Olmo-3.1-32B-Instruct-MLX-8bit", "Olmo 3.1", OLMO3_32B, "Instruct", "8bit", True),
    CatalogEntry("mlx-community/Olmo-3.1-32B-Think-4bit", "Olmo 3.1", OLMO3_32B, "Think", "4bit", False, _INFERRED),
    CatalogEntry("mlx-community/Olmo-3-32B-Think-4bit", "Olmo 3", OLMO3_32B, "Think", "4bit", False, _INFERRED),
    CatalogEntry("mlx-community/Olmo-3-32B-Think-8bit", "Olmo 3", OLMO3_32B, "Think", "8bit", False, _INFERRED),
)


@dataclass(frozen=True)
class CatalogItem:
    """A catalog entry as shown on this machine: its memory verdict and the local copy, if any."""

    entry: CatalogEntry
    fit: MemoryFit
    local: LocalModel | None

    @property
    def installed(self) -> bool:
        return self.local is not None and self.local.installed


# ---------------------------------------------------------------------------------------------------------------
# Local models
# ---------------------------------------------------------------------------------------------------------------


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
    origin: str | None = None  # imports: the folder it came from
    problem: str | None = None  # why it is not installed
    active: bool = False  # a download for it is running in this ModelStore

    @property
    def installed(self) -> bool:
        return self.status == "installed"

    def _info(self, key: str) -> Any:
        return (self.info or {}).get(key)

    @property
    def param_count(self) -> int | None:
        return self._info("param_count")

    @property
    def weight_bytes(self) -> int | None:
        return self._info("weight_bytes")

    @property
    def quantization(self) -> dict[str, Any] | None:
        return self._info("quantization")

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
# Download events
# ---------------------------------------------------------------------------------------------------------------


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
    file: str | None  # None: the whole folder (loader checks)


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


class DownloadError(Exception):
    """A download that cannot go on. ``code`` is one of:

    ``offline`` (offline mode is on), ``unreachable`` (no connection after retries), ``not_found`` (repo or
    revision), ``auth_required`` (gated or private: needs a token / license acceptance), ``not_olmo3``,
    ``unsupported`` (no safetensors weights), ``bad_repo`` (inconsistent repo), ``disk_full``, ``busy`` (another
    download of the same model holds its lock), ``verify_failed``, ``server_error``, ``io_error``, ``cancelled``,
    ``paused``, ``internal``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ModelBusyError(RuntimeError):
    """The model is being downloaded (here or by another process); pause or wait before deleting it."""


class ModelNotFoundError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "model not found"


class ModelImportError(ValueError):
    """A folder that cannot be imported (not a loadable Olmo-3 model, or the name is taken)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retries after dropped connections and server errors. Attempts count only failures with no new bytes."""

    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    planning_attempts: int = 3  # before any file: fail fast when offline

    def delay(self, attempt: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2 ** max(0, attempt - 1))


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None = None  # LFS files
    blob_id: str | None = None  # git blob sha1 of small files

    @property
    def is_weights(self) -> bool:
        return self.name.endswith(".safetensors")


@dataclass(frozen=True)
class DownloadPlan:
    """What a download of ``repo_id`` fetches, known before anything is written."""

    repo_id: str
    revision: str
    commit: str
    files: tuple[RemoteFile, ...]
    config: dict[str, Any]
    gated: bool

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def weight_bytes(self) -> int:
        return sum(f.size for f in self.files if f.is_weights)

    def memory_fit(
        self, context_tokens: int = DEFAULT_CONTEXT_TOKENS, budget: MemoryBudget | int | None = None
    ) -> MemoryFit:
        c = self.config
        layers = int(c.get("num_hidden_layers", 0))
        heads = int(c.get("num_attention_heads", 1))
        kv_heads = int(c.get("num_key_value_heads", heads))
        head_dim = int(c.get("head_dim") or int(c.get("hidden_size", 0)) // max(1, heads))
        types = c.get("layer_types") or ["full_attention"] * layers
        per_layer = 2 * kv_heads * head_dim * 2
        full = sum(1 for t in types if t == "full_attention")
        return estimate_memory_fit(
            weight_bytes=self.weight_bytes,
            kv_bytes_per_token_full=full * per_layer,
            kv_bytes_per_token_sliding=(len(types) - full) * per_layer,
            sliding_window=int(c.get("sliding_window") or 0),
            context_tokens=context_tokens,
            budget=budget,
        )


# ---------------------------------------------------------------------------------------------------------------
# Helpers: JSON files, hashes, safetensors, disk
# ---------------------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json_atomic(path: Path, data: Any) -> None:
    """Write via a temporary file + rename, so a crash never leaves a half-written marker or state."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))


def _allowed(name: str) -> bool:
    """Top-level files matching ALLOW_PATTERNS; nothing hidden, nothing in subfolders."""
    if "/" in name or "\\" in name or name.startswith(".") or not name:
        return False
    return any(fnmatch.fnmatchcase(name, p) for p in ALLOW_PATTERNS)


class _Stopped(Exception):
    """Raised inside the download thread when pause/cancel was requested."""


def _hash_file(path: Path, algo: str, *, git_blob: bool = False, stop: threading.Event | None = None) -> str:
    h = hashlib.new(algo)
    if git_blob:
        h.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            if stop is not None and stop.is_set():
                raise _Stopped()
            h.update(chunk)
    return h.hexdigest()


def check_safetensors_file(path: Path) -> None:
    """Cheap structural check: the header parses and the tensors' data ends exactly at the end of the file.

    Catches truncated and padded files without reading the weights. Raises ValueError naming the file.
    """
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or 8 + n > size:
                raise ValueError(f"header length {n} does not fit in a {size}-byte file")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a valid safetensors file ({e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a valid safetensors file (header is not an object)")
    end = 0
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(meta, dict) or "data_offsets" not in meta:
            raise ValueError(f"{path}: tensor {key!r} has no data_offsets")
        end = max(end, int(meta["data_offsets"][1]))
    if 8 + n + end != size:
        raise ValueError(f"{path}: tensors end at byte {8 + n + end} but the file has {size} bytes (truncated?)")


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (header only); empty if unreadable."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100_000_000:
                return {}
            meta = json.loads(f.read(n)).get("__metadata__")
    except (OSError, ValueError, AttributeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _free_space(path: Path) -> int:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def _owned_bytes(path: Path) -> int:
    """Bytes that deleting ``path`` frees: regular files only; symlinks (linked imports) free nothing."""
    total = 0
    for root, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, name)):
                total += st.st_size
    return total


def _inspect(path: Path) -> ModelInfo:
    from .model.modelinfo import inspect_model_dir

    return inspect_model_dir(path)


def _info_dict(info: ModelInfo, name: str | None = None) -> dict[str, Any]:
    d = info.to_dict() if hasattr(info, "to_dict") else dataclasses.asdict(info)
    d.pop("path", None)
    if name is not None:
        d["name"] = name
    return json.loads(json.dumps(d, default=str))


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    default = {"http": 80, "https": 443}
    return (pa.scheme, pa.hostname, pa.port or default.get(pa.scheme)) == (
        pb.scheme,
        pb.hostname,
        pb.port or default.get(pb.scheme),
    )


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def default_models_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "models"


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


# ---------------------------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------------------------

EventCallback = Callable[[DownloadEvent], None]


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
        verify_load: after download/import, load the model fully (``olmo3.load``) besides the cheap checks.
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
        verify_load: bool = False,
    ) -> None:
        self.models_dir = Path(models_dir).expanduser() if models_dir is not None else default_models_dir()
        self.hf_cache_dir = Path(hf_cache_dir).expanduser() if hf_cache_dir is not None else default_hf_cache_dir()
        self.include_hf_cache = include_hf_cache
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.token = token
        if offline is None:
            offline = _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
        self.offline = offline
        self.free_space_fn = free_space_fn or _free_space
        self.retry = retry or RetryPolicy()
        self.chunk_size = chunk_size
        self.progress_interval_s = progress_interval_s
        self.verify_load = verify_load
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
        models = self._scan_store()
        if self.include_hf_cache:
            models.extend(self._scan_hf_cache())
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

    def _scan_store(self) -> list[LocalModel]:
        out: list[LocalModel] = []
        if not self.models_dir.is_dir():
            return out
        for owner_dir in sorted(self.models_dir.iterdir()):
            if owner_dir.name.startswith(".") or not owner_dir.is_dir() or owner_dir.is_symlink():
                continue
            for d in sorted(owner_dir.iterdir()):
                if d.name.startswith(".") or not d.is_dir():
                    continue
                try:
                    name = validate_repo_id(f"{owner_dir.name}/{d.name}")
                except InvalidRepoId:
                    continue
                out.append(self._describe_store_dir(name, d))
        return out

    def _describe_store_dir(self, name: str, path: Path) -> LocalModel:
        with self._active_lock:
            active = name in self._active and not self._active[name].done
        marker = _read_json(path / MARKER_NAME)
        if marker is not None:
            problem = self._marker_problem(path, marker)
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
        else:
            problem = None
        state = _read_json(path / DOWNLOAD_DIR / STATE_NAME)
        done, total = self._partial_progress(path, state)
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

    @staticmethod
    def _marker_problem(path: Path, marker: Any) -> str | None:
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

    @staticmethod
    def _partial_progress(path: Path, state: Any) -> tuple[int, int]:
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

    def _scan_hf_cache(self) -> list[LocalModel]:
        """Olmo-3 snapshots in the Hugging Face cache, offered in place (their files stay where they are)."""
        if not self.hf_cache_dir.is_dir():
            return []
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound

        try:
            cache = scan_cache_dir(self.hf_cache_dir)
        except (CacheNotFound, OSError, ValueError):
            log.debug("cannot scan HF cache %s", self.hf_cache_dir, exc_info=True)
            return []
        from .model.modelinfo import ModelLoadError

        out: list[LocalModel] = []
        for repo in sorted(cache.repos, key=lambda r: r.repo_id):
            if repo.repo_type != "model" or not repo.revisions:
                continue
            rev = max(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
            snap = Path(rev.snapshot_path)
            config = _read_json(snap / "config.json")
            if not isinstance(config, dict) or config.get("model_type") != "olmo3":
                continue
            try:
                name = validate_repo_id(repo.repo_id)
            except InvalidRepoId:
                continue
            size = sum(f.size_on_disk for f in rev.files if _allowed(f.file_name))
            try:
                info = _inspect(snap)
                for shard in snap.glob("*.safetensors"):
                    check_safetensors_file(shard)
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
                    info=_info_dict(info, name.split("/")[1]),
                )
            )
        return out

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
        return [CatalogItem(e, e.memory_fit(context_tokens, budget), local.get(e.repo_id)) for e in CATALOG]

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
        if model is None:
            raise ModelNotFoundError(f"no model named {name!r} in {self.models_dir} or the Hugging Face cache")
        with self._active_lock:
            handle = self._active.get(name)
        if model.source != "hf_cache" and handle is not None and not handle.done:
            raise ModelBusyError(f"{name} is being downloaded; pause or cancel the download before deleting it")
        if model.source == "hf_cache":
            freed = self._delete_from_hf_cache(model)
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
            freed = _owned_bytes(path)
            shutil.rmtree(path)
        try:
            path.parent.rmdir()  # the owner folder, if now empty
        except OSError:
            pass
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

    def _delete_from_hf_cache(self, model: LocalModel) -> int:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir(self.hf_cache_dir)
        strategy = cache.delete_revisions(str(model.revision))
        freed = int(strategy.expected_freed_size)
        strategy.execute()
        return freed

    # -- import ----------------------------------------------------------------------------------------------
    def import_model(
        self,
        source: str | Path,
        *,
        link: bool = False,
        name: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> LocalModel:
        """Validate a local Olmo-3 folder, then copy it (or link its files) into the store as ``name``.

        ``name`` defaults to ``local/<folder name>``. With ``link=True`` the store folder holds symlinks to the
        original files (no copy; deleting the model later never touches the originals). Only weights, config,
        tokenizer and template files are taken. ``on_progress(done_bytes, total_bytes)`` reports copying.
        """
        from .model.modelinfo import ModelLoadError

        src = Path(source).expanduser().resolve()
        if not src.is_dir():
            raise ModelImportError(f"{src} is not a folder")
        try:
            _inspect(src)
            for shard in src.glob("*.safetensors"):
                check_safetensors_file(shard)
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
        files = sorted(p for p in src.iterdir() if _allowed(p.name) and p.is_file())
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
                info = _inspect(tmp)
                if self.verify_load:
                    self._deep_load(tmp)
                marker = {
                    "format": MARKER_FORMAT,
                    "app": APP_NAME,
                    "name": name,
                    "repo_id": None,
                    "source": "link" if link else "copy",
                    "origin": str(src),
                    "files": sizes,
                    "imported_at": _now(),
                    "info": _info_dict(info, dest.name),
                }
                _write_json_atomic(tmp / MARKER_NAME, marker)
                os.rename(tmp, dest)
            except BaseException as e:
                shutil.rmtree(tmp, ignore_errors=True)
                if isinstance(e, ModelLoadError):
                    raise ModelImportError(f"{src} does not load after import: {e}") from e
                if isinstance(e, OSError):
                    raise ModelImportError(f"could not {'link' if link else 'copy'} {src} into {dest}: {e}") from e
                raise
        return self._describe_store_dir(name, dest)

    @staticmethod
    def _copy_file(src: Path, dst: Path, done: int, total: int, on_progress: Callable[[int, int], None] | None) -> int:
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            while chunk := fi.read(8 * 1024 * 1024):
                fo.write(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)
        shutil.copystat(src, dst)
        return done

    @staticmethod
    def _deep_load(path: Path) -> None:
        from .model.loader import load

        model, _tok = load(path)
        del model

    # -- downloads -------------------------------------------------------------------------------------------
    def start_download(
        self, repo_id: str, *, revision: str = "main", on_event: EventCallback | None = None
    ) -> DownloadHandle:
        """Start (or resume) downloading ``repo_id`` on a worker thread; returns at once.

        A second call for a model already downloading in this store joins it: the same handle is returned and
        ``on_event`` is added to its listeners. A download of the same model by another process (or another
        ModelStore on the same folder) is refused with a ``busy`` DownloadFailed event. Raises InvalidRepoId
        synchronously for a bad repo id.
        """
        repo_id = validate_repo_id(repo_id)
        with self._active_lock:
            previous = self._active.get(repo_id)
            if previous is not None and not previous.done:
                if not previous._stop.is_set():
                    if on_event is not None:
                        previous.add_listener(on_event)
                    return previous
                # Paused a moment ago and still finishing its last chunk: the new run starts when it has ended.
            handle = DownloadHandle(repo_id)
            if on_event is not None:
                handle.add_listener(on_event)
            self._active[repo_id] = handle
        job = _DownloadJob(self, handle, revision, after=previous)
        thread = threading.Thread(target=job.run, name=f"download {repo_id}", daemon=True)
        handle._thread = thread
        thread.start()
        return handle

    def resume_download(self, name: str, *, on_event: EventCallback | None = None) -> DownloadHandle:
        """Resume an incomplete download (e.g. after the app restarted); partial files are reused."""
        model = self.find(name)
        repo_id = (model.repo_id if model is not None else None) or name
        return self.start_download(repo_id, on_event=on_event)

    def download(self, repo_id: str, *, revision: str = "main", on_event: EventCallback | None = None) -> LocalModel:
        """Blocking download: returns the installed model or raises DownloadError (code ``paused``/``cancelled``
        when stopped through the handle)."""
        handle = self.start_download(repo_id, revision=revision, on_event=on_event)
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
        return _Planner(self, validate_repo_id(repo_id), revision, threading.Event(), None).plan()

    # -- huggingface_hub plumbing ----------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        from . import __version__

        return build_hf_headers(token=self.token, library_name="olmo-desktop", library_version=__version__)


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
        self._stop_mode: Literal["pause", "cancel", "discard"] | None = None
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

    def _request_stop(self, mode: Literal["pause", "cancel", "discard"]) -> None:
        with self._lock:
            if self._stop_mode is None or mode == "discard":
                self._stop_mode = mode
        self._stop.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

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


# ---------------------------------------------------------------------------------------------------------------
# Planning and downloading (worker thread)
# ---------------------------------------------------------------------------------------------------------------


def _classify(e: BaseException, endpoint: str, repo_id: str) -> tuple[bool, DownloadError]:
    """(transient?, the error to report) for an exception raised by huggingface_hub or the file system."""
    import httpx2
    from huggingface_hub import errors as hf_errors

    if isinstance(e, DownloadError):
        return False, e
    if isinstance(e, hf_errors.OfflineModeIsEnabled):
        return False, DownloadError("offline", "offline mode is on (HF_HUB_OFFLINE): downloads are disabled")
    if isinstance(e, hf_errors.GatedRepoError):
        return False, DownloadError(
            "auth_required",
            f"{repo_id} is gated: accept its license on {endpoint}/{repo_id} while logged in, "
            "then add a Hugging Face access token",
        )
    if isinstance(e, hf_errors.RevisionNotFoundError):
        return False, DownloadError("not_found", f"{repo_id} has no such revision on {endpoint}")
    if isinstance(e, hf_errors.RepositoryNotFoundError):
        return False, DownloadError(
            "not_found",
            f"no model {repo_id!r} on {endpoint}: check the name; if the repo is private, add an access token",
        )
    if isinstance(e, hf_errors.RemoteEntryNotFoundError):
        return False, DownloadError("bad_repo", f"{repo_id}: a file listed by the Hub is missing ({e})")
    if isinstance(e, hf_errors.FileMetadataError):
        return False, DownloadError("server_error", f"{endpoint} did not answer like the Hugging Face Hub: {e}")
    if isinstance(e, hf_errors.HfHubHTTPError):
        status = e.response.status_code if e.response is not None else 0
        if status in (401, 403):
            return False, DownloadError(
                "auth_required", f"{repo_id}: access denied ({status}); check your Hugging Face access token"
            )
        if status == 404:
            return False, DownloadError("not_found", f"{repo_id}: not found on {endpoint}")
        if status in (408, 429) or status >= 500:
            return True, DownloadError("unreachable", f"{endpoint} answered {status}")
        return False, DownloadError("server_error", f"{endpoint} answered {status}: {e}")
    if isinstance(e, httpx2.TransportError):
        host = urlsplit(endpoint).hostname or endpoint
        return True, DownloadError("unreachable", f"connection to {host} failed ({type(e).__name__}: {e})")
    if isinstance(e, OSError):
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return False, DownloadError("disk_full", f"the disk is full ({e})")
        if e.errno is None:  # http_get's "Consistency check failed": the stream ended short
            return True, DownloadError("unreachable", str(e).splitlines()[0])
        return False, DownloadError("io_error", f"cannot write the download: {e}")
    return False, DownloadError("internal", f"unexpected error: {type(e).__name__}: {e}")


class _Planner:
    """Model info + config + index: the exact list of files, before any folder is created."""

    def __init__(
        self,
        store: ModelStore,
        repo_id: str,
        revision: str,
        stop: threading.Event,
        emit: Callable[[DownloadEvent], None] | None,
    ) -> None:
        self.store = store
        self.repo_id = repo_id
        self.revision = revision
        self.stop = stop
        self.emit = emit

    def _retrying(self, what: Callable[[], Any], file: str | None) -> Any:
        attempt = 0
        while True:
            if self.stop.is_set():
                raise _Stopped()
            try:
                return what()
            except _Stopped:
                raise
            except Exception as e:
                transient, err = _classify(e, self.store.endpoint, self.repo_id)
                attempt += 1
                if not transient or attempt >= self.store.retry.planning_attempts:
                    if transient:
                        raise DownloadError(
                            "unreachable",
                            f"cannot reach {self.store.endpoint} ({err.message}); check your internet connection",
                        ) from e
                    raise err from e
                delay = self.store.retry.delay(attempt)
                if self.emit is not None:
                    self.emit(
                        DownloadRetrying(
                            repo_id=self.repo_id, file=file, attempt=attempt, delay_s=delay, reason=err.message
                        )
                    )
                if self.stop.wait(delay):
                    raise _Stopped()

    def _fetch_small(self, commit: str, name: str) -> bytes:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get

        def fetch() -> bytes:
            url = hf_hub_url(self.repo_id, name, revision=commit, endpoint=self.store.endpoint)
            headers = self.store._headers()
            meta = get_hf_file_metadata(url, token=self.store.token, headers=headers, endpoint=self.store.endpoint)
            if not _same_origin(url, meta.location):
                headers.pop("authorization", None)
            buf = io.BytesIO()
            http_get(meta.location, buf, headers=headers, expected_size=meta.size, tqdm_class=_SilentBar)
            return buf.getvalue()

        return self._retrying(fetch, name)

    def plan(self) -> DownloadPlan:
        from huggingface_hub import HfApi

        if self.store.offline:
            raise DownloadError(
                "offline", "offline mode is on (HF_HUB_OFFLINE): downloads are disabled; installed models still work"
            )
        api = HfApi(endpoint=self.store.endpoint, token=self.store.token, library_name="olmo-desktop")
        info = self._retrying(lambda: api.model_info(self.repo_id, revision=self.revision, files_metadata=True), None)
        commit = info.sha
        if not commit:
            raise DownloadError("server_error", f"{self.store.endpoint} returned no commit for {self.repo_id}")
        siblings = {s.rfilename: s for s in (info.siblings or [])}
        weights = [n for n in siblings if n.endswith(".safetensors") and _allowed(n)]
        if "config.json" not in siblings:
            raise DownloadError("not_olmo3", f"{self.repo_id} has no config.json, so it is not an Olmo-3 model")
        config = self._load_json(commit, "config.json")
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if model_type != "olmo3":
            raise DownloadError(
                "not_olmo3",
                f"{self.repo_id} is a {model_type!r} model, not Olmo-3: Olmo Desktop runs only models whose "
                "config.json says model_type 'olmo3'",
            )
        if not weights:
            other = sorted(n for n in siblings if n.endswith((".bin", ".pt", ".pth", ".gguf")))
            found = f" (it has {', '.join(other[:3])})" if other else ""
            raise DownloadError(
                "unsupported",
                f"{self.repo_id} has no .safetensors weights{found}; use an MLX conversion such as "
                "mlx-community/Olmo-3-7B-Instruct-4bit",
            )
        wanted = {n for n in siblings if _allowed(n) and not n.endswith(".safetensors")}
        index_name = "model.safetensors.index.json"
        if index_name in siblings:
            index = self._load_json(commit, index_name)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise DownloadError("bad_repo", f"{self.repo_id}: {index_name} has no weight_map")
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if s not in siblings or not _allowed(s)]
            if missing:
                raise DownloadError("bad_repo", f"{self.repo_id}: {index_name} names shards the repo lacks: {missing}")
            wanted.update(shards)
        else:
            wanted.update(weights)
        files = []
        for n in sorted(wanted, key=lambda n: (n.endswith(".safetensors"), n)):
            s = siblings[n]
            size = s.lfs.size if s.lfs is not None else s.size
            if size is None:
                raise DownloadError("server_error", f"{self.store.endpoint} did not report the size of {n}")
            files.append(
                RemoteFile(
                    n, int(size), s.lfs.sha256 if s.lfs is not None else None, None if s.lfs is not None else s.blob_id
                )
            )
        return DownloadPlan(self.repo_id, self.revision, commit, tuple(files), config, bool(info.gated))

    def _load_json(self, commit: str, name: str) -> Any:
        data = self._fetch_small(commit, name)
        try:
            return json.loads(data)
        except ValueError as e:
            raise DownloadError("bad_repo", f"{self.repo_id}: {name} is not valid JSON ({e})") from e


class _SilentBar:
    """A tqdm stand-in for http_get that shows nothing (small files fetched into memory)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _SilentBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass


class _ProgressBar:
    """The tqdm stand-in http_get writes through: turns chunks into DownloadProgress and notices pause.

    http_get calls ``update(len(chunk))`` *before* writing the chunk; raising there (pause) leaves the partial
    file ending exactly after the last whole chunk written, so the next run resumes from its size.
    """

    def __init__(self, job: _DownloadJob, file: RemoteFile, fh: Any, **_tqdm_kwargs: Any) -> None:
        self.job, self.file, self.fh = job, file, fh

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        self.job.on_chunk(self.file, self.fh.tell() + n)

    def close(self) -> None:
        pass


class _DownloadJob:
    def __init__(
        self, store: ModelStore, handle: DownloadHandle, revision: str, after: DownloadHandle | None = None
    ) -> None:
        self.after = after
        self.store = store
        self.handle = handle
        self.repo_id = handle.repo_id
        self.revision = revision
        self.stop = handle._stop
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
            raise _Stopped()
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
                except _Stopped:
                    final = self._stopped()
        except DownloadError as e:
            final = DownloadFailed(
                repo_id=self.repo_id, code=e.code, message=e.message, done_bytes=self.done, total_bytes=self.total
            )
        except Exception as e:
            log.exception("download of %s failed", self.repo_id)
            _t, err = _classify(e, self.store.endpoint, self.repo_id)
            final = DownloadFailed(
                repo_id=self.repo_id, code=err.code, message=err.message, done_bytes=self.done, total_bytes=self.total
            )
        self.store._finished(self.handle)
        self.handle._finish(final)

    def _stopped(self) -> DownloadCancelled:
        mode = self.handle._stop_mode or "pause"
        discarded = False
        if mode == "discard" and self.dest.is_dir() and not (self.dest / MARKER_NAME).exists():
            shutil.rmtree(self.dest, ignore_errors=True)
            try:
                self.dest.parent.rmdir()
            except OSError:
                pass
            discarded = True
        return DownloadCancelled(
            repo_id=self.repo_id,
            paused=mode == "pause",
            discarded=discarded,
            done_bytes=0 if discarded else self.done,
            total_bytes=self.total,
        )

    def _run_locked(self) -> DownloadEvent:
        existing = self.store._describe_store_dir(self.repo_id, self.dest) if self.dest.is_dir() else None
        if existing is not None and existing.installed:
            existing = dataclasses.replace(existing, active=False)
            return DownloadCompleted(repo_id=self.repo_id, model=existing, already_installed=True)

        self.plan = plan = _Planner(self.store, self.repo_id, self.revision, self.stop, self.emit).plan()
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
            "downloaded_at": _now(),
            "info": {**_info_dict(info, self.dest.name), "revision": plan.commit},
        }
        _write_json_atomic(self.dest / MARKER_NAME, marker)
        shutil.rmtree(self.dl_dir, ignore_errors=True)
        model = dataclasses.replace(self.store._describe_store_dir(self.repo_id, self.dest), active=False)
        return DownloadCompleted(repo_id=self.repo_id, model=model)

    # -- state -----------------------------------------------------------------------------------------------
    def _load_state(self) -> None:
        """Reuse partial files from an earlier run when they belong to the same files (same ETag/hash)."""
        assert self.plan is not None
        old = _read_json(self.dl_dir / STATE_NAME)
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
        self.state = {
            "format": 1,
            "repo_id": self.repo_id,
            "ref": self.revision,
            "commit": self.plan.commit,
            "endpoint": self.store.endpoint,
            "started_at": (old or {}).get("started_at") if isinstance(old, dict) else None,
            "files": files,
        }
        self.state["started_at"] = self.state["started_at"] or _now()

    def _save_state(self) -> None:
        _write_json_atomic(self.dl_dir / STATE_NAME, self.state)

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
        assert self.plan is not None
        needed = self.plan.total_bytes - self._bytes_on_disk()
        where = self.dest if self.dest.exists() else self.store.models_dir
        free = int(self.store.free_space_fn(where))
        if needed > free:
            raise DownloadError(
                "disk_full",
                f"not enough disk space for {self.repo_id}: it needs {format_bytes(needed)} more "
                f"({needed:,} bytes) but only {format_bytes(free)} ({free:,} bytes) is free at {where}",
            )

    # -- one file --------------------------------------------------------------------------------------------
    def _download_file(self, f: RemoteFile) -> None:
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get

        if self.stop.is_set():
            raise _Stopped()
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
                if not _same_origin(url, meta.location):
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
                        bar = functools.partial(_ProgressBar, self, f, fh)
                        http_get(
                            meta.location,
                            fh,
                            resume_size=start,
                            headers=headers,
                            expected_size=f.size,
                            displayed_filename=f.name,
                            tqdm_class=bar,
                        )  # type: ignore[arg-type]
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
            except (_Stopped, DownloadError):
                raise
            except Exception as e:
                transient, err = _classify(e, self.store.endpoint, self.repo_id)
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
                    raise _Stopped() from None
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
            return _hash_file(part, "sha256", stop=self.stop) == f.sha256.lower()
        if f.blob_id:
            return _hash_file(part, "sha1", git_blob=True, stop=self.stop) == f.blob_id.lower()
        return True

    # -- verification ----------------------------------------------------------------------------------------
    def _verify_folder(self) -> ModelInfo:
        from .model.modelinfo import ModelLoadError

        assert self.plan is not None
        try:
            for f in self.plan.files:
                p = self.dest / f.name
                if not p.is_file() or p.stat().st_size != f.size:
                    raise ValueError(f"{f.name} is missing or has the wrong size")
                if f.is_weights:
                    check_safetensors_file(p)
            info = _inspect(self.dest)
            if self.store.verify_load:
                self.store._deep_load(self.dest)
        except (ModelLoadError, ValueError) as e:
            raise DownloadError("verify_failed", f"{self.repo_id} downloaded but does not load: {e}") from e
        return info
