"""Planning a download: which files of a repo to fetch (sizes, hashes, commit), checked to be Olmo-3 first.

``Planner.plan()`` asks the Hub through huggingface_hub (``HfApi.model_info``, then ``config.json`` and the
weight index fetched into memory) and returns a ``DownloadPlan`` before anything is written. ``classify_error``
turns what huggingface_hub and the file system raise into a ``DownloadError`` with a code, and says whether a
retry could help.
"""

from __future__ import annotations

import errno
import fnmatch
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit

from ..fileio import loads_json
from ..memory import MemoryBudget
from .catalog import DEFAULT_CONTEXT_TOKENS, MemoryFit, estimate_memory_fit
from .events import DownloadError, DownloadEvent, DownloadRetrying, StopRequestedError

if TYPE_CHECKING:
    from .model_store import ModelStore

__all__ = [
    "ALLOW_PATTERNS",
    "DownloadPlan",
    "Planner",
    "RemoteFile",
    "classify_error",
    "is_allowed",
    "kv_per_token",
    "same_origin",
]

# What a download fetches: weights, config, tokenizer, chat template. Never code (*.py) or pickles (*.bin, *.pt).
ALLOW_PATTERNS: Final[tuple[str, ...]] = (
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
INDEX_NAME: Final = "model.safetensors.index.json"
MAX_SMALL_JSON_BYTES: Final = 16 * 1024**2  # config.json and the weight index, fetched into memory

T = TypeVar("T")


def is_allowed(name: str) -> bool:
    """Top-level files matching ALLOW_PATTERNS; nothing hidden, nothing in subfolders."""
    if "/" in name or "\\" in name or name.startswith(".") or not name:
        return False
    return any(fnmatch.fnmatchcase(name, p) for p in ALLOW_PATTERNS)


def same_origin(a: str, b: str) -> bool:
    """Same scheme, host and port: where a request may carry the Hub token (never to a CDN)."""
    pa, pb = urlsplit(a), urlsplit(b)
    default = {"http": 80, "https": 443}
    return (pa.scheme, pa.hostname, pa.port or default.get(pa.scheme)) == (
        pb.scheme,
        pb.hostname,
        pb.port or default.get(pb.scheme),
    )


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
        full, sliding, window = kv_per_token(self.config)
        return estimate_memory_fit(
            weight_bytes=self.weight_bytes,
            kv_bytes_per_token_full=full,
            kv_bytes_per_token_sliding=sliding,
            sliding_window=window,
            context_tokens=context_tokens,
            budget=budget,
        )


def kv_per_token(config: dict[str, Any]) -> tuple[int, int, int]:
    """(KV bytes per token of all full-attention layers, of all sliding layers, the sliding window) from a
    config.json, bf16 cache entries: what ``estimate_memory_fit`` needs, without reading any weights."""
    layers = int(config.get("num_hidden_layers", 0))
    heads = int(config.get("num_attention_heads", 1))
    kv_heads = int(config.get("num_key_value_heads", heads))
    head_dim = int(config.get("head_dim") or int(config.get("hidden_size", 0)) // max(1, heads))
    types = config.get("layer_types") or ["full_attention"] * layers
    per_layer = 2 * kv_heads * head_dim * 2
    full = sum(1 for t in types if t == "full_attention")
    return full * per_layer, (len(types) - full) * per_layer, int(config.get("sliding_window") or 0)


def classify_error(e: BaseException, endpoint: str, repo_id: str) -> tuple[bool, DownloadError]:
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
        return True, DownloadError("unreachable", f"cannot reach {host}: {e or type(e).__name__}")
    if isinstance(e, OSError):
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return False, DownloadError("disk_full", f"the disk is full ({e})")
        if e.errno is None:  # http_get's "Consistency check failed": the stream ended short
            return True, DownloadError("unreachable", str(e).splitlines()[0])
        return False, DownloadError("io_error", f"cannot write the download: {e}")
    return False, DownloadError("internal", f"unexpected error: {type(e).__name__}: {e}")


class SilentBar:
    """A tqdm stand-in for http_get that shows nothing (small files fetched into memory)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> SilentBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        pass


class Planner:
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

    def _retrying(self, what: Callable[[], T], file: str | None) -> T:
        attempt = 0
        while True:
            if self.stop.is_set():
                raise StopRequestedError()
            try:
                return what()
            except StopRequestedError:
                raise
            except Exception as e:
                transient, err = classify_error(e, self.store.endpoint, self.repo_id)
                attempt += 1
                if not transient or attempt >= self.store.retry.planning_attempts:
                    raise err from e  # transient ones are "unreachable": the app and the CLI say what to do
                delay = self.store.retry.delay(attempt)
                if self.emit is not None:
                    self.emit(
                        DownloadRetrying(
                            repo_id=self.repo_id, file=file, attempt=attempt, delay_s=delay, reason=err.message
                        )
                    )
                if self.stop.wait(delay):
                    raise StopRequestedError() from None

    def _fetch_small(self, commit: str, name: str) -> bytes:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get

        def fetch() -> bytes:
            url = hf_hub_url(self.repo_id, name, revision=commit, endpoint=self.store.endpoint)
            headers = self.store._headers()
            meta = get_hf_file_metadata(url, token=self.store.token, headers=headers, endpoint=self.store.endpoint)
            if meta.size is not None and meta.size > MAX_SMALL_JSON_BYTES:
                raise DownloadError("bad_repo", f"{self.repo_id}: {name} is {meta.size:,} bytes; too large to read")
            if not same_origin(url, meta.location):
                headers.pop("authorization", None)
            buf = io.BytesIO()
            http_get(meta.location, buf, headers=headers, expected_size=meta.size, tqdm_class=SilentBar)
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
        weights = [n for n in siblings if n.endswith(".safetensors") and is_allowed(n)]
        if "config.json" not in siblings:
            raise DownloadError("not_olmo3", f"{self.repo_id} has no config.json, so it is not an Olmo-3 model")
        config = self._load_json(commit, "config.json")
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if not isinstance(config, dict) or model_type != "olmo3":
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
        wanted = {n for n in siblings if is_allowed(n) and not n.endswith(".safetensors")}
        if INDEX_NAME in siblings:
            index = self._load_json(commit, INDEX_NAME)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise DownloadError("bad_repo", f"{self.repo_id}: {INDEX_NAME} has no weight_map")
            shards = sorted({str(s) for s in weight_map.values()})
            missing = [s for s in shards if s not in siblings or not is_allowed(s)]
            if missing:
                raise DownloadError("bad_repo", f"{self.repo_id}: {INDEX_NAME} names shards the repo lacks: {missing}")
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
            return loads_json(data, what=name)
        except ValueError as e:  # not JSON, not UTF-8, or nested too deep
            raise DownloadError("bad_repo", f"{self.repo_id}: {name} is not valid JSON ({e})") from e
