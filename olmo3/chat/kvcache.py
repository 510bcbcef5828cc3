"""Snapshots, restores, trimming and sizes for Olmo-3's hybrid KV cache (a list of per-layer caches).

A conversation's cache mixes ``KVCache`` (full layers) and ``RotatingKVCache`` (sliding layers), possibly a
``QuantizedKVCache`` for full layers (8-bit KV). Three facts shape this module:

* ``type(c).from_state(c.state)`` is *not* a snapshot: it holds the same ``mx.array`` objects, and both
  cache kinds update with slice assignment (``keys[..., i:j, :] = k``), which would then change the
  snapshot too. We give snapshots new array objects over the same data (slices). MLX copies a buffer only
  when one side writes into it while the other still references it, so a snapshot costs nothing up front.
* A ring buffer that has wrapped cannot be rewound: ``can_trim`` is False once any sliding layer's
  ``offset >= max_size``; ``trim`` refuses rather than desynchronising layers.
* A ``KVCache`` grows in 256-token steps; ``compact`` drops the unused tail so a cache at rest holds exactly
  its tokens.

**Across several machines** (``olmo3.parallel``) each rank holds part of every cache, and every rank must run the
same cache operations in the same order. Rank 0's caches then carry a ``mirror`` (a :class:`Mirror`): each
operation here that makes, changes or rewinds a cache tells it, and it has the other ranks do the same to their
parts. Without a mirror (one machine) nothing changes.
"""

from __future__ import annotations

from typing import Any, Protocol

import mlx.core as mx
from mlx_lm.models.cache import KVCache, QuantizedKVCache, RotatingKVCache

Cache = list[Any]


class Mirror(Protocol):
    """Has the other ranks repeat a cache operation on their parts (``olmo3.parallel.replicate``)."""

    def derived(self, op: str, src: Cache, out: Cache, *args: int) -> Cache:
        """``out`` was made from ``src`` by ``op`` ("snapshot", "quantize"); returns it as a mirrored cache."""
        ...

    def apply(self, op: str, cache: Cache, *args: int) -> None:
        """``op`` ("trim", "compact") was applied to ``cache`` in place."""
        ...

    def can_trim(self, cache: Cache, n: int) -> bool:
        """Whether every rank's part can be rewound by ``n`` (a rank's own layers do not tell)."""
        ...


def mirror_of(cache: Cache | None) -> Mirror | None:
    return getattr(cache, "mirror", None)


def _slice_time(x: Any, end: int | None) -> Any:
    """New array object(s) over the first ``end`` positions of axis -2 (all of it when ``end`` is None)."""
    if isinstance(x, (tuple, list)):
        return type(x)(_slice_time(v, end) for v in x)
    if x is None:
        return None
    return x[..., :end, :] if end is not None else x[...]


def _copy_layer(c: Any) -> Any:
    """A cache object of the same class holding fresh array objects over the same data."""
    if isinstance(c, RotatingKVCache):
        r = RotatingKVCache(max_size=c.max_size, keep=c.keep)
        r.keys, r.values = _slice_time(c.keys, None), _slice_time(c.values, None)
        r.offset, r._idx = c.offset, c._idx
        return r
    if isinstance(c, QuantizedKVCache):
        q = QuantizedKVCache(group_size=c.group_size, bits=c.bits)
        q.keys = _slice_time(c.keys, c.offset) if c.keys is not None else None
        q.values = _slice_time(c.values, c.offset) if c.values is not None else None
        q.offset = c.offset
        return q
    if isinstance(c, KVCache):
        n = KVCache()
        n.keys = _slice_time(c.keys, c.offset) if c.keys is not None else None
        n.values = _slice_time(c.values, c.offset) if c.values is not None else None
        n.offset = c.offset
        return n
    raise TypeError(f"unsupported cache layer {type(c).__name__}")


def snapshot(cache: Cache) -> Cache:
    """A copy-on-write snapshot: independent of later writes to ``cache`` (and vice versa)."""
    out = [_copy_layer(c) for c in cache]
    mirror = mirror_of(cache)
    return mirror.derived("snapshot", cache, out) if mirror is not None else out


def restore(snap: Cache) -> Cache:
    """A live cache restored from a snapshot; the snapshot stays intact for later restores."""
    return snapshot(snap)


def offset(cache: Cache) -> int:
    """Tokens the cache has seen (every layer agrees; a mismatch means a corrupted cache)."""
    offsets = {c.offset for c in cache}
    if len(offsets) != 1:
        raise RuntimeError(f"cache layers disagree on their offsets: {sorted(offsets)}")
    return offsets.pop()


def can_trim(cache: Cache, n: int = 1) -> bool:
    """True if every layer can be rewound by ``n`` tokens (no sliding layer has wrapped)."""
    mirror = mirror_of(cache)
    if mirror is not None:
        return mirror.can_trim(cache, n)
    for c in cache:
        if isinstance(c, RotatingKVCache) and c.offset >= c.max_size:
            return False
        if c.offset < n:
            return False
    return True


def trim(cache: Cache, n: int) -> None:
    """Rewind every layer by ``n`` tokens, or raise (never trims some layers and not others)."""
    if n <= 0:
        return
    if not can_trim(cache, n):
        raise ValueError(f"cannot trim {n} tokens: a sliding-window layer has wrapped")
    for c in cache:
        c.trim(n)
    mirror = mirror_of(cache)
    if mirror is not None:
        mirror.apply("trim", cache, n)


def compact(cache: Cache) -> None:
    """Drop the unused 256-step padding of full-attention layers (a real copy, so memory is freed)."""
    for c in cache:
        if isinstance(c, KVCache) and c.keys is not None and c.values is not None and c.keys.shape[-2] != c.offset:
            c.keys = mx.contiguous(c.keys[..., : c.offset, :])
            c.values = mx.contiguous(c.values[..., : c.offset, :])
    mx.eval([c.state for c in cache])
    mirror = mirror_of(cache)
    if mirror is not None:
        mirror.apply("compact", cache)


def nbytes(cache: Cache | None) -> int:
    if not cache:
        return 0
    return sum(c.nbytes for c in cache)


def kv_group_size(head_dim: int) -> int | None:
    """The quantization group for keys/values of ``head_dim`` (MLX supports 32, 64, 128), or None."""
    for g in (64, 32):
        if head_dim % g == 0:
            return g
    return None


def quantize_full_layers(cache: Cache, bits: int = 8) -> Cache:
    """8-bit KV for the full-attention layers (the rotating ones cannot be quantized in mlx-lm).

    Halves the bytes of the layers that grow with the conversation. Olmo-3's head_dim 128 quantizes in groups
    of 64; a head_dim no group divides is left unquantized."""
    out = []
    for c in cache:
        if type(c) is KVCache and c.keys is not None:
            group = kv_group_size(c.keys.shape[-1])
            if group is not None:
                c = c.to_quantized(group_size=group, bits=bits)
        out.append(c)
    mirror = mirror_of(cache)
    return mirror.derived("quantize", cache, out, bits) if mirror is not None else out
