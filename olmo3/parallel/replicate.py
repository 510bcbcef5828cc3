"""Rank 0 runs the conversation; every other rank repeats its forward passes and cache operations, in order.

``ChatSession`` (and ``generate_step`` inside it) does not know it runs on several machines: on rank 0 it gets a
:class:`LeaderModel`, which behaves like the model (``model(tokens, cache=…)``, ``make_cache()``), and caches that
are :class:`ReplicatedCache` lists (rank 0's part of each layer cache) with a ``mirror``, through which
``olmo3.chat.kvcache`` reports every snapshot, restore, trim, compaction and quantization. Each becomes a
**command** that every rank receives in the same order; the followers (:func:`follow`) hold their parts of the
same caches under the same ids and apply the same operation. Spilling to disk and restoring are commands too,
so every rank writes and reads its own part (:class:`CacheFiles`), and a restore happens only when every rank
has a valid part.

**Commands travel through MLX, not a transport of our own**: a fixed frame of :data:`FRAME` int32 is
``all_sum``-ed, rank 0 contributing the command and everyone else zeros (a broadcast), then, if it has one, a
payload the same way. A forward command carries the token ids to feed in its frame, and the frame is part of the
forward pass's graph: rank 0 can build the next decode step from a token that is not sampled yet (as
``generate_step`` does, one step ahead) and never waits for the broadcast. Every other command is evaluated at once
(they are rare: a few per turn).

**The followers decode one step ahead too** (:func:`follow`). A follower that learnt each step from its frame
first would start building and queueing the step's thousands of kernels only once the frame had arrived, while every
rank waits for it at the step's first collective: the whole host-side cost of a step on the critical path, every
step. So after a one-token pass a follower queues, at once, the next one-token pass on the same cache *together with
the frame it is waiting for*, its token read from that frame on the device. If the frame says so, that pass is the
step and is already running. If not (rank 0 sent another command), rank 0 knows the followers guessed (its last
command was a one-token pass on that cache) and runs the same collectives: a one-token pass on a fresh cache that it
throws away (:meth:`LeaderModel._settle`). The followers take the guessed token back out of their caches with
``trim(1)`` and carry on with the command. That is exact even for a sliding-window cache that has wrapped (which
cannot be trimmed in general): the guessed token overwrote the oldest entry, which no later pass can read (a one-token
pass overwrites it again; a longer one drops it: ``RotatingKVCache`` keeps ``window - 1`` old entries).

Ordering: collectives pair up by their order on each rank. Rank 0's forward passes may run on ``generate_step``'s
own stream while a later command would go on the default one, so before a command on a different stream than the
previous one, rank 0 waits for that stream (:meth:`LeaderModel._issue`).

Imports MLX: run it on the MLX thread (the engine thread, or a follower's main thread).
"""

from __future__ import annotations

import json
import logging
import os
import weakref
from enum import IntEnum
from pathlib import Path
from typing import Any, Final, cast

import mlx.core as mx

from ..chat import kvcache
from ..model.config import SLIDING
from .shard import Shard

__all__ = ["FRAME", "CacheFiles", "LeaderModel", "Op", "ReplicatedCache", "follow"]

log = logging.getLogger(__name__)

FRAME: Final = 64
HEADER: Final = 8  # op, cache id, a, b, c, payload length, (reserved) x2
INLINE: Final = FRAME - HEADER  # token ids carried in the frame itself (decode steps, short chunks)


class Op(IntEnum):
    STOP = 1
    MAKE = 2  # rid
    FORWARD = 3  # rid, length
    SNAPSHOT = 4  # dst, src
    QUANTIZE = 5  # dst, src, bits
    TRIM = 6  # rid, n
    COMPACT = 7  # rid
    FREE = 8  # rid
    SPILL = 9  # rid + payload {conv, meta}
    LOAD = 10  # rid + payload {conv, expect}: every rank checks its part, all load or none
    DELETE = 11  # payload {conv}: a conversation's spilled parts are deleted everywhere


class ReplicatedCache(list[Any]):
    """Rank 0's part of a cache every rank holds a part of, known to all by ``rid``."""

    __slots__ = ("__weakref__", "mirror", "rid")

    def __init__(self, layers: list[Any], mirror: LeaderModel, rid: int):
        super().__init__(layers)
        self.mirror, self.rid = mirror, rid


class CacheFiles:
    """Where a rank spills its part of a conversation's cache, and the checks before it comes back.

    The file's metadata is the single-machine fingerprint (format, model, transcript hash, token count) plus this
    rank, the number of ranks and the layout: a part from another split is never taken for this one."""

    def __init__(self, cache_dir: Path, rank: int, layout_key: str, tag: str, n_layers: int):
        self.cache_dir, self.rank, self.layout_key, self.tag, self.n_layers = cache_dir, rank, layout_key, tag, n_layers

    def path(self, conv: str) -> Path:
        return self.cache_dir / f"{conv}.{self.tag}.safetensors"

    def stamp(self, meta: dict[str, str], world: int) -> dict[str, str]:
        return {**meta, "rank": str(self.rank), "world": str(world), "layout": self.layout_key}

    def save(self, path: Path, cache: list[Any], meta: dict[str, str]) -> None:
        from mlx_lm.models.cache import save_prompt_cache

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name.removesuffix(".safetensors") + ".tmp.safetensors")
        save_prompt_cache(str(tmp), list(cache), meta)
        os.replace(tmp, path)

    def load(self, path: Path, expect: dict[str, str]) -> tuple[list[Any] | None, list[str]]:
        """This rank's part, if it is there and matches ``expect`` (stamped); else the problems."""
        from mlx_lm.models.cache import load_prompt_cache

        if not path.exists():
            return None, [f"rank {self.rank}'s part is missing"]
        try:
            cache, meta = load_prompt_cache(str(path), return_metadata=True)
        except Exception as e:  # a corrupt file: safetensors/MLX raise various errors
            return None, [f"rank {self.rank}'s part is unreadable ({e})"]
        problems = [f"rank {self.rank}: {k} differs" for k, v in expect.items() if meta.get(k) != v]
        if len(cache) != self.n_layers:
            problems.append(f"rank {self.rank}: {len(cache)} layers, expected {self.n_layers}")
        elif {c.offset for c in cache} != {int(expect.get("n_tokens", "-1"))}:
            problems.append(f"rank {self.rank}: offsets do not match the transcript")
        return (None, problems) if problems else (cache, [])


def _broadcast(values: mx.array, group: Any) -> mx.array:
    """Rank 0's ``values`` on every rank (the others pass zeros of the same shape)."""
    return mx.distributed.all_sum(values, group=group)


def _payload(data: bytes) -> mx.array:
    return mx.array(list(data), dtype=mx.int32)


def ints(a: mx.array) -> list[int]:
    """A 1-D integer array's values (evaluated)."""
    return [int(v) for v in cast(list[int], a.tolist())]


class LeaderModel:
    """Rank 0's model: runs its part and has every rank run theirs (module docstring)."""

    replicated: Final = True

    def __init__(self, shard: Shard, files: CacheFiles, info: Any = None):
        self.shard, self.files = shard, files
        self.group, self.layout = shard.group, shard.layout
        self.args = shard.args
        self.model_type = self.args.model_type
        self.info = info
        self.cache_tag = "." + files.tag  # the engine names rank 0's spilled parts with it
        self.tokenizer: Any = None
        self._next_rid = 1
        self._freed: list[int] = []
        self._streams: tuple[Any, Any] | None = None
        self._any_sliding = SLIDING in self.args.layer_types
        self._ahead: int | None = None  # the cache the followers run a one-token pass ahead on (module docstring)
        self.closed = False

    # ------------------------------------------------------------------ sending commands
    def _issue(self) -> None:
        """Before a collective: if the previous one went on another stream, wait for that stream first."""
        now = (mx.default_stream(mx.default_device()), mx.default_stream(mx.cpu))
        if self._streams is not None and self._streams != now:
            for s in dict.fromkeys(self._streams):
                mx.synchronize(s)
        self._streams = now

    def _header(self, op: Op, rid: int = 0, a: int = 0, b: int = 0, c: int = 0, payload: int = 0) -> list[int]:
        return [int(op), rid, a, b, c, payload, 0, 0]

    def _settle(self, frame: mx.array, step_of: int | None) -> mx.array:
        """After broadcasting ``frame`` (``step_of``: the cache it runs a one-token pass on, else None): if the
        followers ran a one-token pass ahead that this frame is not, run the same collectives (a one-token pass on a
        fresh cache, thrown away). Returns what this rank's next collective must depend on."""
        ahead, self._ahead = self._ahead, step_of
        if ahead is None or ahead == step_of:
            return frame
        ids = mx.depends(mx.zeros((1, 1), mx.int32), frame)
        return self.shard.forward(ids, 1, self.shard.make_cache())

    def _command(self, op: Op, rid: int = 0, a: int = 0, b: int = 0, c: int = 0, data: bytes = b"") -> None:
        """Send a command (not a forward pass) and wait until every rank has it."""
        if self.closed:
            raise RuntimeError("the parallel group has stopped")
        self._flush_freed()
        self._issue()
        header = self._header(op, rid, a, b, c, len(data))
        frame = _broadcast(mx.array(header + [0] * INLINE, dtype=mx.int32), self.group)
        out = [frame, self._settle(frame, None)]
        if data:
            out.append(_broadcast(mx.depends(_payload(data), out[-1]), self.group))
        mx.eval(out)

    def _flush_freed(self) -> None:
        while self._freed:
            rid = self._freed.pop()
            self._issue()
            frame = _broadcast(mx.array(self._header(Op.FREE, rid) + [0] * INLINE, dtype=mx.int32), self.group)
            mx.eval(frame, self._settle(frame, None))

    def _wrap(self, layers: list[Any]) -> ReplicatedCache:
        rid = self._next_rid
        self._next_rid += 1
        cache = ReplicatedCache(layers, self, rid)
        weakref.finalize(cache, self._freed.append, rid)  # a cache rank 0 dropped is freed everywhere
        return cache

    # ------------------------------------------------------------------ the model's face
    def make_cache(self) -> ReplicatedCache:
        cache = self._wrap(self.shard.make_cache())
        self._command(Op.MAKE, cache.rid)
        return cache

    def __call__(self, inputs: mx.array, cache: Any = None) -> mx.array:
        """``model(tokens[1, L], cache=…) -> logits[1, L, V]`` with every rank running its part."""
        if cache is None:
            cache = self.make_cache()  # a one-off pass: freed once the caller drops it
        if not isinstance(cache, ReplicatedCache):
            raise TypeError("a parallel model needs the caches it made (make_cache)")
        if self.closed:
            raise RuntimeError("the parallel group has stopped")
        self._flush_freed()
        ids = inputs.reshape(-1).astype(mx.int32)  # may be lazy: a token generate_step has not sampled yet
        n = int(ids.shape[0])
        self._issue()
        header = mx.array(self._header(Op.FORWARD, cache.rid, n), dtype=mx.int32)
        if n <= INLINE:
            frame = _broadcast(mx.concatenate([header, ids, mx.zeros((INLINE - n,), mx.int32)]), self.group)
            after = self._settle(frame, cache.rid if n == 1 else None)
            got = frame[HEADER : HEADER + n]
            if after is not frame:
                got = mx.depends(got, after)
        else:
            frame = _broadcast(mx.concatenate([header, mx.zeros((INLINE,), mx.int32)]), self.group)
            got = _broadcast(mx.depends(ids, self._settle(frame, None)), self.group)
        return self.shard.forward(got[None], n, list(cache))

    # ------------------------------------------------------------------ kvcache.Mirror
    def derived(self, op: str, src: list[Any], out: list[Any], *args: int) -> ReplicatedCache:
        cache = self._wrap(out)
        src_rid = src.rid if isinstance(src, ReplicatedCache) else 0
        if op == "snapshot":
            self._command(Op.SNAPSHOT, cache.rid, src_rid)
        elif op == "quantize":
            self._command(Op.QUANTIZE, cache.rid, src_rid, args[0])
        else:
            raise ValueError(f"unknown cache operation {op!r}")
        return cache

    def apply(self, op: str, cache: list[Any], *args: int) -> None:
        rid = cache.rid if isinstance(cache, ReplicatedCache) else 0
        if op == "trim":
            self._command(Op.TRIM, rid, args[0])
        elif op == "compact":
            self._command(Op.COMPACT, rid)
        else:
            raise ValueError(f"unknown cache operation {op!r}")

    def can_trim(self, cache: list[Any], n: int = 1) -> bool:
        """All ranks' layers at once: every part has the same offset, and a sliding layer anywhere (on any rank)
        has wrapped once the offset reaches the window."""
        offset = kvcache.offset(cache) if cache else 0
        if offset < n:
            return False
        return not (self._any_sliding and offset >= self.args.sliding_window)

    # ------------------------------------------------------------------ spilling (the engine's side)
    def spill(self, path: Path, conv: str, cache: list[Any], meta: dict[str, str]) -> None:
        """Every rank writes its part of ``cache`` (rank 0 at ``path``), stamped with rank and layout; returns when
        all have, or raises ``OSError`` naming the ranks that could not (the caller keeps the cache then)."""
        if not isinstance(cache, ReplicatedCache):
            raise TypeError("not a parallel cache")
        self._command(Op.SPILL, cache.rid, data=json.dumps({"conv": conv, "meta": meta}).encode())
        error = _try(self.files.save, path, cache, self.files.stamp(meta, self.layout.world))
        ok = _gather_ok(error is None, self.group)
        if not all(ok):
            bad = ", ".join(str(r) for r, good in enumerate(ok) if not good)
            raise OSError(f"rank(s) {bad} could not write their part of the cache" + (f" ({error})" if error else ""))

    def load_spilled(self, path: Path, conv: str, expect: dict[str, str]) -> tuple[ReplicatedCache | None, list[str]]:
        """Every rank checks its part; all of them load (the files are then deleted) or none does (the parts are
        discarded). Returns rank 0's part as a live cache, or the problems."""
        rid = self._next_rid
        self._next_rid += 1
        self._command(Op.LOAD, rid, data=json.dumps({"conv": conv, "expect": expect}).encode())
        mine, problems = self.files.load(path, self.files.stamp(expect, self.layout.world))
        ok = _gather_ok(not problems, self.group)
        path.unlink(missing_ok=True)  # loaded (the live cache is the truth now) or discarded
        if not all(ok):
            bad = [r for r, good in enumerate(ok) if not good and r != 0]
            return None, problems + ([f"rank(s) {', '.join(map(str, bad))} have no valid part"] if bad else [])
        assert mine is not None
        cache = ReplicatedCache(mine, self, rid)
        weakref.finalize(cache, self._freed.append, rid)
        return cache, []

    def delete_spilled(self, conv: str) -> None:
        """Every other rank deletes its spilled part of ``conv`` (the engine deletes rank 0's); returns when done."""
        self._command(Op.DELETE, data=json.dumps({"conv": conv}).encode())
        _gather_ok(True, self.group)

    def close(self) -> None:
        """Tell every rank to stop (their loops end; they exit)."""
        if not self.closed:
            self._command(Op.STOP)
            self.closed = True


def _try(fn: Any, *args: Any) -> Exception | None:
    try:
        fn(*args)
    except Exception as e:  # a full disk, a read-only folder: reported by every rank together
        return e
    return None


def _gather_ok(ok: bool, group: Any) -> list[bool]:
    flags = mx.distributed.all_gather(mx.array([1 if ok else 0], dtype=mx.int32), group=group)
    mx.eval(flags)
    return [bool(v) for v in ints(flags)]


def _run_ahead(shard: Shard, group: Any, cache: list[Any]) -> mx.array:
    """Queue the frame to come and, behind it, a one-token pass on ``cache`` fed with the frame's first token
    (module docstring); returns the frame (evaluating it waits for rank 0's next command)."""
    frame = _broadcast(mx.zeros((FRAME,), mx.int32), group)
    mx.async_eval(frame)  # queued first: a pass's first collective need not depend on the frame (a pipeline's recv)
    out = shard.forward(frame[HEADER : HEADER + 1][None], 1, cache)
    mx.async_eval(out, [layer.state for layer in cache])
    return frame


def follow(shard: Shard, files: CacheFiles, on_command: Any = None) -> int:
    """A follower's loop: receive each command and do to its parts what rank 0 did to its own. Returns the number
    of commands served when rank 0 says STOP.

    After every one-token pass the follower queues the next one-token pass on the same cache before it knows
    whether rank 0 will send one (module docstring: "The followers decode one step ahead too"): decoding, each
    step's kernels are queued while the step before runs, as on rank 0. A wrong guess costs one token's pass and
    a ``trim(1)``, once per reply."""
    group, world = shard.group, shard.layout.world
    caches: dict[int, list[Any]] = {}
    served = 0
    ahead: int | None = None  # the cache a one-token pass runs ahead on, queued behind ``frame``
    frame = _broadcast(mx.zeros((FRAME,), mx.int32), group)
    while True:
        op, rid, a, b, _, n_payload = ints(frame)[:6]  # waits for rank 0's next command
        served += 1
        if ahead is not None:
            if op == Op.FORWARD and rid == ahead and a == 1:  # the pass queued ahead is this step: it runs already
                frame = _run_ahead(shard, group, caches[rid])
                continue
            for layer in caches[ahead]:  # not a step: take the guessed token back out (exact: module docstring)
                layer.trim(1)
            ahead = None
        data = b""
        if n_payload:
            payload = _broadcast(mx.zeros((n_payload,), mx.int32), group)
            mx.eval(payload)
            data = bytes(ints(payload))
        log.debug("rank %d: command %s %s", shard.rank, op, (rid, a, b, n_payload))
        if on_command is not None:
            on_command(op)
        if op == Op.STOP:
            return served
        if op == Op.FORWARD:
            if a <= INLINE:
                ids = frame[HEADER : HEADER + a]
            else:  # the ids' own broadcast; evaluated now, also where this rank's part does not embed (pipeline)
                ids = _broadcast(mx.zeros((a,), mx.int32), group)
                mx.eval(ids)
            cache = caches[rid]
            out = shard.forward(ids[None], a, cache)
            if a == 1:  # a one-token pass: the next one is queued at once, behind the next frame
                mx.async_eval(out, [layer.state for layer in cache])
                frame, ahead = _run_ahead(shard, group, cache), rid
                continue
            mx.eval(out, [layer.state for layer in cache])
        elif op == Op.MAKE:
            caches[rid] = shard.make_cache()
        elif op == Op.SNAPSHOT:
            caches[rid] = kvcache.snapshot(caches[a])
        elif op == Op.QUANTIZE:
            caches[rid] = kvcache.quantize_full_layers(caches[a], bits=b)
        elif op == Op.TRIM:
            kvcache.trim(caches[rid], a)
        elif op == Op.COMPACT:
            kvcache.compact(caches[rid])
        elif op == Op.FREE:
            caches.pop(rid, None)
        elif op == Op.SPILL:
            msg = json.loads(data)
            error = _try(files.save, files.path(msg["conv"]), caches[rid], files.stamp(msg["meta"], world))
            if error is not None:
                log.warning("rank %d: cannot write its part of %s: %s", shard.rank, msg["conv"], error)
            _gather_ok(error is None, group)
        elif op == Op.DELETE:
            error = _try(files.path(json.loads(data)["conv"]).unlink, True)
            _gather_ok(error is None, group)
        elif op == Op.LOAD:
            msg = json.loads(data)
            path = files.path(msg["conv"])
            mine, problems = files.load(path, files.stamp(msg["expect"], world))
            if problems:
                log.warning("rank %d: cannot restore %s: %s", shard.rank, path, "; ".join(problems))
            ok = _gather_ok(not problems, group)
            path.unlink(missing_ok=True)
            if all(ok) and mine is not None:
                caches[rid] = mine
        else:
            raise RuntimeError(f"unknown command {op} from rank 0")
        if op in (Op.FREE, Op.COMPACT):
            mx.clear_cache()
        frame = _broadcast(mx.zeros((FRAME,), mx.int32), group)
