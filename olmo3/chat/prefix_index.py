"""The local server's conversations: which cached conversation a stateless request continues, and the disk tier.

Runs on the engine thread. Requests carry no conversation id; :meth:`ServePool.prepare` finds the cache to use:

1. **Render** the request with the model's chat template (:class:`ServeSession`).
2. **Rank** every server conversation, in memory or spilled to disk, by how much of that rendering a cache of
   it can hold: its live transcript or one of its snapshots whose text is a prefix of the rendering, or any
   common prefix while that cache can still be rewound (no ring buffer has wrapped). Text, not token ids,
   because token ids of a reply the model wrote need not be what tokenizing its text gives (the session keeps
   them verbatim). A spilled conversation is ranked by the token ids kept beside its file, without loading it.
3. **Decide where it runs.** Requests that share everything up to and including the first user message
   (:meth:`CompletionRequest.conversation_key`) are one conversation: a follow-up, an edited earlier turn or a
   regenerated reply. They run in that conversation's session, whose own reconcile (extend, restore the
   snapshot at the turn boundary, or re-prefill) picks the cache; the replaced branch stays a snapshot. Any
   other request starts a new conversation, **forked**: a new session seeded with a copy-on-write copy of the
   best cache found anywhere (typically a shared system prompt), so interleaved clients never take each other's
   live cache away. A raw prompt (no turns) continues a conversation only when it extends its live transcript
   or a snapshot whole; otherwise it forks too.

**The disk tier.** Conversations share the engine's memory budget and least-recently-used spill with the app's.
A spilled server conversation is ``<cache_dir>/serve/<id>.safetensors`` (the engine's cache format) plus
``<id>.json`` beside it: its token ids, conversation key and model fingerprint. At the first request after a
model is loaded, those files are read back as conversations without caches, so a follow-up after a server restart
restores its cache from disk. The tier keeps at most ``disk_limit`` bytes, dropping the oldest files.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fileio import read_json, write_atomic
from ..model.template import Rendering
from . import kvcache
from .completion import SERVE_PREFIX, CompletionRejected, CompletionRequest, is_serve_id
from .events import Event
from .sampling import Sampling
from .serve_session import ServeSession, common_text_prefix
from .session import _Snapshot
from .tool_turns import template_renders_tools

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "olmo-desktop-serve-1"
DEFAULT_DISK_LIMIT = 16 * 1024**3
MAX_WARM = 64  # server conversations with a cache in memory (the byte budget usually binds first)
MAX_CONVERSATIONS = 256  # server conversations known at all, in memory or on disk
_SAMPLING_KEYS = {f.name for f in fields(Sampling)}  # the app's sampling settings are not the server's


class RequestRejectedError(ValueError):
    """The request cannot run (its messages do not render, a token id is out of range): a 400."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


@dataclass
class Prepared:
    """Where a request runs: the session (registered in the engine under ``conv_id``) and how to start it."""

    conv_id: str
    session: ServeSession
    forked: bool
    request: CompletionRequest

    processors: list[Any] = field(default_factory=list)  # the engine's own (tests force replies with one)

    def start(self, session: Any, should_stop: Callable[[], bool]) -> Iterator[Event]:
        return self.session.run_request(self.request, should_stop, forked=self.forked, processors=self.processors)


def admit(pool: ServePool | None, request: CompletionRequest) -> Prepared | CompletionRejected:
    """Where ``request`` runs (``pool.prepare``), or why it cannot: no model loaded (503), bad input (400)."""
    if pool is None:
        return CompletionRejected(status=503, message="no model is loaded", code="model_not_loaded")
    try:
        return pool.prepare(request)
    except RequestRejectedError as e:
        return CompletionRejected(status=400, message=str(e), code=e.code, param=e.param)


class ServePool:
    """The server's conversations of the engine's loaded model (see the module docstring)."""

    def __init__(self, engine: Engine, *, disk_limit: int | None = None):
        self.engine = engine
        self.dir = Path(engine.cache_dir) / "serve"
        self.fingerprint: str = engine.info.fingerprint
        self.disk_limit = DEFAULT_DISK_LIMIT if disk_limit is None else disk_limit
        self._texts: dict[int, tuple[list[int], str]] = {}
        self._probe: ServeSession | None = None
        self._scan()

    # ------------------------------------------------------------------ paths
    def cache_file(self, conv_id: str) -> Path:
        return self.dir / f"{conv_id[len(SERVE_PREFIX) :]}.safetensors"

    @staticmethod
    def sidecar(cache_file: Path) -> Path:
        return cache_file.with_suffix(".json")

    def sessions(self) -> dict[str, ServeSession]:
        return {cid: s for cid, s in self.engine.sessions.items() if is_serve_id(cid) and isinstance(s, ServeSession)}

    def _new_session(self, conv_key: str | None) -> ServeSession:
        opts = {k: v for k, v in self.engine.session_options.items() if k not in _SAMPLING_KEYS}
        return ServeSession(
            self.engine.model, self.engine.tokenizer, conv_key=conv_key, kv_bits=self.engine.kv_bits, **opts
        )

    def _register(self, conv_id: str, s: ServeSession, last_used: float) -> None:
        self.engine.sessions[conv_id] = s
        self.engine._last_used[conv_id] = last_used

    def _forget(self, conv_id: str, *, delete_file: bool) -> None:
        self.engine.sessions.pop(conv_id, None)
        self.engine._last_used.pop(conv_id, None)
        if delete_file:
            path = self.cache_file(conv_id)
            path.unlink(missing_ok=True)
            self.sidecar(path).unlink(missing_ok=True)

    # ------------------------------------------------------------------ choosing the cache
    def prepare(self, request: CompletionRequest) -> Prepared:
        """Pick (or fork) the session for ``request`` and load the request into it. Raises
        :class:`RequestRejectedError` for a request that cannot run."""
        self._tidy()
        vocab = self.engine.info.vocab_size
        bad = [t for t in request.logit_bias if not 0 <= t < vocab]
        if bad:
            raise RequestRejectedError(
                f"logit_bias: token id {bad[0]} is outside the vocabulary (0..{vocab - 1})", param="logit_bias"
            )
        probe = self._probe or self._new_session(None)
        self._probe = probe
        probe.load_request(request)
        if request.tools and not template_renders_tools(probe):
            raise RequestRejectedError(
                "the loaded model's chat template shows no tools to the model (it has no function calling)",
                param="tools",
                code="tools_not_supported",
            )
        try:
            rendering = probe.rendered()
        except Exception as e:  # a template's raise_exception() or any rendering error: the messages' fault
            raise RequestRejectedError(f"the model's chat template cannot render these messages: {e}") from e
        text = rendering.text
        if not text:
            raise RequestRejectedError("the prompt is empty", param="prompt" if request.raw else "messages")

        key = request.conversation_key()
        sessions = self.sessions()
        scored = sorted(
            ((self._coverage(cid, s, text), self.engine._last_used.get(cid, 0.0), cid) for cid, s in sessions.items()),
            reverse=True,
        )
        current = {id(b) for b in self._all_bases(sessions)}
        self._texts = {k: v for k, v in self._texts.items() if k in current}
        chosen: str | None = None
        if key is not None:
            chosen = next((cid for cov, _, cid in scored if sessions[cid].conv_key == key), None)
        elif scored and scored[0][0][1]:
            chosen = scored[0][2]  # a raw prompt extending a transcript or snapshot whole
        if chosen is not None:
            s = sessions[chosen]
            s.load_request(request)
            self.engine._last_used[chosen] = time.monotonic()
            return Prepared(chosen, s, False, request)

        conv_id = SERVE_PREFIX + uuid.uuid4().hex[:20]
        s = self._new_session(key)
        if scored and scored[0][0][0] > 0:
            self._seed(s, sessions[scored[0][2]], rendering)
        self._register(conv_id, s, time.monotonic())
        s.load_request(request)
        return Prepared(conv_id, s, True, request)

    def _all_bases(self, sessions: dict[str, ServeSession]) -> Iterator[list[int]]:
        for s in sessions.values():
            yield s.tokens
            for snap in s.snapshots:
                yield snap.tokens

    def _text(self, tokens: list[int], s: ServeSession) -> str:
        hit = self._texts.get(id(tokens))
        if hit is not None and hit[0] is tokens:
            return hit[1]
        text = s._decode(tokens)
        self._texts[id(tokens)] = (tokens, text)
        return text

    def _coverage(self, conv_id: str, s: ServeSession, text: str) -> tuple[int, bool]:
        """(characters of ``text`` a cache of ``s`` can hold, whether one holds a transcript that ``text`` extends)."""
        window = s.info.sliding_window if s.info.num_sliding_layers else None
        bases: list[list[int]] = []
        if s.cache is not None or self.cache_file(conv_id).exists():
            bases.append(s.tokens)
        bases.extend(snap.tokens for snap in s.snapshots)
        best, whole = 0, False
        for toks in bases:
            if not toks:
                continue
            base = self._text(toks, s)
            if text.startswith(base) and len(base) < len(text):
                if len(base) >= best:
                    best, whole = len(base), True
            elif window is None or len(toks) < window:  # can still be rewound to the common prefix
                best = max(best, common_text_prefix(base, text))
        return best, whole

    def _seed(self, s: ServeSession, source: ServeSession, rendering: Rendering) -> None:
        """Give a new conversation a copy-on-write copy of ``source``'s best cache for ``rendering``."""
        target, _ = source._target(rendering)
        best = source.best_cache(target)
        if best is None or best[0] == 0:
            return
        usable, _, cache, toks = best
        copy = kvcache.snapshot(cache)
        if usable < len(toks):
            kvcache.trim(copy, len(toks) - usable)
        s.snapshots = [_Snapshot(list(toks[:usable]), copy)]

    # ------------------------------------------------------------------ housekeeping
    def _tidy(self) -> None:
        """Forget conversations with no cache left anywhere; keep the counts of warm and known ones bounded."""
        sessions = self.sessions()
        for cid, s in sessions.items():
            if s.cache is None and not s.snapshots and not self.cache_file(cid).exists():
                self._forget(cid, delete_file=False)
        by_age = sorted(self.sessions(), key=lambda c: self.engine._last_used.get(c, 0.0))
        warm = [c for c in by_age if self.engine.sessions[c].cache is not None]
        for cid in warm[: max(0, len(warm) - MAX_WARM)]:
            self.engine._spill(cid, self.engine.sessions[cid])
        for cid in by_age[: max(0, len(by_age) - MAX_CONVERSATIONS)]:
            self._forget(cid, delete_file=True)

    def spilled(self, conv_id: str, s: Any) -> None:
        """The engine spilled ``conv_id``'s cache: write its token ids beside the file, keep the tier bounded."""
        path = self.cache_file(conv_id)
        data = {
            "format": SIDECAR_FORMAT,
            "model_fingerprint": s.info.fingerprint,
            "conv_key": getattr(s, "conv_key", None),
            "tokens": list(s.tokens),
            "saved_at": time.time(),
        }
        write_atomic(self.sidecar(path), json.dumps(data).encode())
        self._enforce_disk_limit()

    def _enforce_disk_limit(self) -> None:
        files = sorted(self.dir.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= self.disk_limit:
                return
            total -= p.stat().st_size
            cid = SERVE_PREFIX + p.name.removesuffix(".safetensors")
            s = self.engine.sessions.get(cid)
            if s is not None and s.cache is None and not s.snapshots:
                self._forget(cid, delete_file=False)
            p.unlink(missing_ok=True)
            self.sidecar(p).unlink(missing_ok=True)
            log.info("serve cache tier: dropped %s (over %d bytes on disk)", p.name, self.disk_limit)

    def _scan(self) -> None:
        """Read the disk tier back: each spilled conversation of this model becomes a session without a cache."""
        if not self.dir.is_dir():
            return
        now_wall, now = time.time(), time.monotonic()
        for side in sorted(self.dir.glob("*.json")):
            cache = side.with_suffix(".safetensors")
            if not cache.exists():
                side.unlink(missing_ok=True)
                continue
            try:
                data = read_json(side, max_bytes=256 * 1024**2)
                if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
                    raise ValueError("not a serve cache index")
                tokens = data.get("tokens")
                if not isinstance(tokens, list) or not all(type(t) is int and t >= 0 for t in tokens):
                    raise ValueError("bad token list")
                key = data.get("conv_key")
                saved = float(data.get("saved_at") or 0.0)
            except (OSError, ValueError) as e:
                log.warning("discarding serve cache %s: %s", side.name, e)
                side.unlink(missing_ok=True)
                cache.unlink(missing_ok=True)
                continue
            if data.get("model_fingerprint") != self.fingerprint:
                continue  # another model's conversation: kept for when that model is loaded again
            s = self._new_session(key if isinstance(key, str) else None)
            s.tokens = tokens
            self._register(SERVE_PREFIX + side.stem, s, now - max(0.0, now_wall - saved))
