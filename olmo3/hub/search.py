"""Search Hugging Face for Olmo-3 MLX conversions, each sized and judged for this machine, cached for offline use.

``search_hub`` asks the Hub's model list (``HfApi.list_models`` filtered by the tags ``olmo3``, which the Hub
derives from config.json's ``model_type``, and ``mlx``), then plans each result as a download would
(``planner.Planner``: ``model_info(files_metadata=True)`` for the exact file sizes, config.json for the shape), so
every result carries its download size and what it needs in memory before anything is downloaded. Results are
written to a JSON file in the user cache folder; when the Hub cannot be reached the cached list comes back with
the time it was fetched and the reason, so the list still shows offline.

Nothing here runs MLX; it is blocking network work for a worker thread (the GUI's chores thread, the CLI).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .. import appinfo
from ..memory import MemoryBudget
from .catalog import DEFAULT_CONTEXT_TOKENS, MemoryFit, catalog_entry, estimate_memory_fit
from .events import DownloadError, StopRequestedError
from .local import now_iso, read_json_or_none, write_json_atomic
from .planner import Planner, classify_error, kv_per_token
from .repo_ids import InvalidRepoIdError, validate_repo_id

if TYPE_CHECKING:
    from .model_store import ModelStore

__all__ = ["SEARCH_TAGS", "SearchResult", "SearchResults", "default_search_cache", "load_cached", "search_hub"]

SEARCH_TAGS: Final[tuple[str, ...]] = ("olmo3", "mlx")
CACHE_FORMAT: Final = 1
DEFAULT_LIMIT: Final = 40
CACHE_NAME: Final = "hub-search.json"


def default_search_cache() -> Path:
    """``<user cache dir>/hub-search.json`` (``olmo3.appinfo.cache_dir``)."""
    return appinfo.cache_dir() / CACHE_NAME


@dataclass(frozen=True)
class SearchResult:
    """One repo found on the Hub: what downloading it fetches and what it needs in memory (or why it can't be used)."""

    repo_id: str
    downloads: int = 0
    likes: int = 0
    last_modified: str | None = None
    total_bytes: int | None = None  # the files a download fetches
    weight_bytes: int | None = None
    bits: int | None = None  # quantization bits from config.json; None: bf16/fp32
    kv_bytes_per_token_full: int = 0
    kv_bytes_per_token_sliding: int = 0
    sliding_window: int = 0
    gated: bool = False
    problem: str | None = None  # why it can't be downloaded (not Olmo-3, no safetensors, ...); None: usable

    @property
    def usable(self) -> bool:
        return self.problem is None and self.total_bytes is not None

    @property
    def quant_label(self) -> str:
        return f"{self.bits}-bit" if self.bits else "bf16"

    @property
    def in_catalog(self) -> bool:
        return catalog_entry(self.repo_id) is not None

    def memory_fit(
        self, context_tokens: int = DEFAULT_CONTEXT_TOKENS, budget: MemoryBudget | int | None = None
    ) -> MemoryFit | None:
        if self.weight_bytes is None:
            return None
        return estimate_memory_fit(
            weight_bytes=self.weight_bytes,
            kv_bytes_per_token_full=self.kv_bytes_per_token_full,
            kv_bytes_per_token_sliding=self.kv_bytes_per_token_sliding,
            sliding_window=self.sliding_window,
            context_tokens=context_tokens,
            budget=budget,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> SearchResult | None:
        """A cached result, or None when the record is not one (an older or foreign cache file)."""
        if not isinstance(data, dict):
            return None
        try:
            repo_id = validate_repo_id(data.get("repo_id"))
        except InvalidRepoIdError:
            return None
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known and k != "repo_id"}
        try:
            return cls(repo_id, **kwargs)
        except TypeError:
            return None


@dataclass(frozen=True)
class SearchResults:
    """A search's results: fresh from the Hub, or the cached ones (``from_cache``) with the reason (``error``)."""

    results: tuple[SearchResult, ...]
    fetched_at: str | None  # ISO time the results came from the Hub; None: never
    from_cache: bool = False
    error: str | None = None  # why the Hub could not be asked this time (the results are the cached ones)
    query: str = ""
    endpoint: str = ""


def load_cached(cache_path: Path | None, endpoint: str) -> SearchResults | None:
    """The results last fetched from ``endpoint`` (None if there are none)."""
    path = cache_path or default_search_cache()
    data = read_json_or_none(path)
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("endpoint") != endpoint:
        return None
    raw = data.get("results")
    results = [r for r in (SearchResult.from_json(d) for d in raw) if r is not None] if isinstance(raw, list) else []
    fetched = data.get("fetched_at")
    return SearchResults(
        tuple(results),
        fetched if isinstance(fetched, str) else None,
        from_cache=True,
        query=str(data.get("query") or ""),
        endpoint=endpoint,
    )


def _save(cache_path: Path, results: SearchResults) -> None:
    write_json_atomic(
        cache_path,
        {
            "format": CACHE_FORMAT,
            "endpoint": results.endpoint,
            "query": results.query,
            "fetched_at": results.fetched_at,
            "results": [r.to_json() for r in results.results],
        },
    )


def _result_from_plan(repo_id: str, listed: Any, store: ModelStore, stop: threading.Event) -> SearchResult:
    base = SearchResult(
        repo_id,
        downloads=int(getattr(listed, "downloads", 0) or 0),
        likes=int(getattr(listed, "likes", 0) or 0),
        last_modified=(lm.isoformat() if (lm := getattr(listed, "last_modified", None)) is not None else None),
    )
    try:
        plan = Planner(store, repo_id, "main", stop, None).plan()
    except DownloadError as e:
        return replace(base, problem=e.message)
    except StopRequestedError:
        raise
    except Exception as e:  # a malformed answer about one repo must not lose the others
        return replace(base, problem=f"{type(e).__name__}: {e}")
    quant = plan.config.get("quantization") or plan.config.get("quantization_config")
    bits = quant.get("bits") if isinstance(quant, dict) else None
    full, sliding, window = kv_per_token(plan.config)
    return replace(
        base,
        total_bytes=plan.total_bytes,
        weight_bytes=plan.weight_bytes,
        bits=int(bits) if isinstance(bits, int) else None,
        kv_bytes_per_token_full=full,
        kv_bytes_per_token_sliding=sliding,
        sliding_window=window,
        gated=plan.gated,
    )


def _probe(store: ModelStore, params: dict[str, Any]) -> None:
    """One plain request before ``list_models``: its client retries a refused connection five times with backoff
    (about 23 s), which is right for a flaky link but not for a Mac that is simply offline."""
    from huggingface_hub import get_session, hf_raise_for_status

    response = get_session().get(
        f"{store.endpoint}/api/models", params={**params, "limit": 1}, headers=store._headers(), timeout=10
    )
    hf_raise_for_status(response)


def search_hub(
    store: ModelStore,
    *,
    query: str = "",
    limit: int = DEFAULT_LIMIT,
    cache_path: Path | None = None,
    stop: threading.Event | None = None,
) -> SearchResults:
    """Olmo-3 MLX repos on the Hub (most downloaded first), each planned like a download; see the module docstring.

    Never raises for network trouble: it returns the cached results with ``error`` set (``from_cache``), or an
    empty list with ``error`` when nothing was cached yet.
    """
    from huggingface_hub import HfApi

    cache = cache_path or default_search_cache()
    stop = stop or threading.Event()
    query = query.strip()

    def cached(reason: str) -> SearchResults:
        old = load_cached(cache, store.endpoint)
        if old is None:
            return SearchResults((), None, from_cache=True, error=reason, query=query, endpoint=store.endpoint)
        return replace(old, error=reason)

    if store.offline:
        return cached("offline mode is on (HF_HUB_OFFLINE)")
    params: dict[str, Any] = {"filter": list(SEARCH_TAGS)}
    if query:
        params["search"] = query
    api = HfApi(endpoint=store.endpoint, token=store.token, library_name="olmo-desktop")
    try:
        _probe(store, params)
        listed: Iterable[Any] = api.list_models(
            filter=list(SEARCH_TAGS), search=query or None, sort="downloads", limit=limit
        )
        found = list(listed)
    except Exception as e:
        _transient, err = classify_error(e, store.endpoint, "the model list")
        return cached(err.message)
    results: list[SearchResult] = []
    for item in found:
        if stop.is_set():
            break
        try:
            repo_id = validate_repo_id(getattr(item, "id", None))
        except InvalidRepoIdError:
            continue
        try:
            results.append(_result_from_plan(repo_id, item, store, stop))
        except StopRequestedError:
            break
    fresh = SearchResults(tuple(results), now_iso(), query=query, endpoint=store.endpoint)
    if not query and not stop.is_set():
        with contextlib.suppress(OSError):  # a read-only cache folder costs only the offline list
            _save(cache, fresh)
    return fresh
