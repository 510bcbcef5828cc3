"""The model manager: where Olmo-3 models live on disk, the curated catalog, downloads, import and delete.

Qt-free, print-free and MLX-free, so the GUI's model picker and the ``olmo3 models`` CLI drive the same code
from any thread:

* ``ModelStore`` (``model_store``) lists installed models (our store under
  ``user_data_dir("Olmo Desktop")/models/<owner>/<name>`` and Olmo-3 snapshots already in the Hugging Face cache,
  used in place; ``local``), downloads, imports and deletes them.
* ``CATALOG`` (``catalog``) holds the Olmo-3 / 3.1 MLX conversions with sizes computed from the architecture,
  and ``estimate_memory_fit`` says whether weights + KV cache at a context length fit this machine.
* Downloads are planned (``planner``: which files, checked to be Olmo-3) and run on a worker thread
  (``download``), reporting ``DownloadEvent`` dataclasses to callbacks (``events``; called on that thread: a
  GUI re-emits them as signals); ``DownloadHandle.pause()`` / ``.cancel()`` work from any thread.
* A model is listed as installed only when ``.olmo-desktop.json`` exists, which is written after every file
  matched the size and hash the Hub reported and the folder passed ``verify.verify_model_folder``: config,
  safetensors structure, and every tensor's name, shape and dtype against what config.json implies.
* Repo ids are validated (``repo_ids``) before any path or URL is built from one.
"""

from __future__ import annotations

from ..memory import MemoryBudget, memory_budget
from .catalog import (
    CATALOG,
    DEFAULT_CONTEXT_TOKENS,
    OLMO3_7B,
    OLMO3_32B,
    Architecture,
    CatalogEntry,
    CatalogItem,
    MemoryFit,
    catalog_entry,
    estimate_memory_fit,
)
from .download import RetryPolicy
from .events import (
    DownloadCancelled,
    DownloadCompleted,
    DownloadError,
    DownloadEvent,
    DownloadFailed,
    DownloadHandle,
    DownloadProgress,
    DownloadQuantizing,
    DownloadRetrying,
    DownloadStarted,
    DownloadVerifying,
    EventCallback,
    FileCompleted,
    Quantizer,
)
from .local import (
    DOWNLOAD_DIR,
    MARKER_NAME,
    LocalModel,
    ModelBusyError,
    ModelImportError,
    ModelNotFoundError,
    default_hf_cache_dir,
    default_models_dir,
)
from .model_store import DEFAULT_ENDPOINT, ModelStore
from .planner import ALLOW_PATTERNS, DownloadPlan, RemoteFile
from .repo_ids import InvalidRepoIdError, repo_id_from_text, validate_repo_id
from .verify import check_safetensors_file, safetensors_metadata, verify_model_folder

__all__ = [
    "ALLOW_PATTERNS",
    "CATALOG",
    "DEFAULT_CONTEXT_TOKENS",
    "DEFAULT_ENDPOINT",
    "DOWNLOAD_DIR",
    "MARKER_NAME",
    "OLMO3_7B",
    "OLMO3_32B",
    "Architecture",
    "CatalogEntry",
    "CatalogItem",
    "DownloadCancelled",
    "DownloadCompleted",
    "DownloadError",
    "DownloadEvent",
    "DownloadFailed",
    "DownloadHandle",
    "DownloadPlan",
    "DownloadProgress",
    "DownloadQuantizing",
    "DownloadRetrying",
    "DownloadStarted",
    "DownloadVerifying",
    "EventCallback",
    "FileCompleted",
    "InvalidRepoIdError",
    "LocalModel",
    "MemoryBudget",
    "MemoryFit",
    "ModelBusyError",
    "ModelImportError",
    "ModelNotFoundError",
    "ModelStore",
    "Quantizer",
    "RemoteFile",
    "RetryPolicy",
    "catalog_entry",
    "check_safetensors_file",
    "default_hf_cache_dir",
    "default_models_dir",
    "estimate_memory_fit",
    "memory_budget",
    "repo_id_from_text",
    "safetensors_metadata",
    "validate_repo_id",
    "verify_model_folder",
]
