"""One rank's part of Olmo-3, loaded from its own slices of the files, and its forward pass.

**Tensor parallel** (:class:`TensorShard`): the readable :class:`olmo3.model.model.Model`, with each layer's
projections swapped for ``mlx.nn``'s distributed linear layers (``AllToShardedLinear`` for q/k/v and gate/up,
``ShardedToAllLinear`` for o and down, whose ``__call__`` ends in the ``all_sum``; their quantized twins for
MLX-quantized checkpoints), built at the rank's shape (``shard_linear`` would first need the full layer) and
filled with the rank's slices. Attention keeps ``H/N`` query and ``Hk/N`` KV heads. q/k-norm spans every head
(``olmo3.model.model.Attention``): by default (``Layout.qk_norm == "local"``) q_proj, k_proj and their norms stay
whole, plain ``mlx.nn`` layers, and ``Attention.heads`` keeps this rank's columns of the normalised q and k, so a
layer costs two collectives (after o, after down); with ``"collective"`` they are split like v_proj and
``Attention.group`` adds up the ranks' sums of squares (``olmo3.model.model.sharded_qk_norm``): three.

* The **embedding is replicated**: every rank needs the whole hidden state of each new token; a lookup costs no
  compute, while sharding it (by vocabulary or by width) would add a collective to every call. At 4 bits it is
  about 1.6 % of Olmo-3 32B.
* The **head lives on rank 0 only**: after the last ``all_sum`` every rank holds the same final hidden state, and
  only rank 0 samples, so the others never compute logits and do not load the head (nor read it).

**Pipeline parallel** (:class:`PipelineShard`): rank ``r`` runs layers ``[start, end)``; rank 0 also embeds, and
applies the final norm and head. The hidden state goes 0 → 1 → … → N-1 → 0: with ``send``/``recv`` where the
backend has them (ring, JACCL, MPI), or, where it has not (MLX-CUDA's NCCL), with one ``all_sum`` per hop to which
every rank but the sender adds zeros (:data:`HANDOVERS`; the choice is made by trying, in ``olmo3.parallel.cluster``).
The way back from the last stage to rank 0 is always such an ``all_sum``.

Every collective of a forward pass depends on the one before it, so all ranks run them in one order whatever
MLX's evaluation order. Rank 0 may evaluate only the caches (a prefill chunk's logits are dropped), so the last
cache's keys are made to depend on the pass's final collective (``mx.depends``): evaluating the caches completes
the whole pass on every rank.

Imports MLX: run it on the MLX thread.
"""

from __future__ import annotations

from typing import Any, Final, cast

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.models.base import create_attention_mask

from ..model.config import FULL, SLIDING, ModelArgs
from ..model.model import DecoderLayer, Model
from .layout import Layout, split_axis
from .slices import SliceReader

__all__ = ["HANDOVERS", "PipelineShard", "Shard", "TensorShard", "load_shard"]

HANDOVERS: Final = ("sendrecv", "collective")


def _quantize(module: nn.Module, quant: dict[str, Any] | None, has_scales: Any) -> None:
    """Quantize the layers the checkpoint stores quantized (``has_scales(path)``), as the loader does."""
    if not quant:
        return

    def predicate(path: str, m: nn.Module) -> bool | dict[str, Any]:
        if path in quant and isinstance(quant[path], dict):
            return dict(quant[path])
        return hasattr(m, "to_quantized") and bool(has_scales(path))

    nn.quantize(
        module,
        group_size=int(quant.get("group_size", 64)),
        bits=int(quant["bits"]),
        mode=quant.get("mode", "affine"),
        class_predicate=predicate,
    )


def _flat(module: nn.Module) -> list[tuple[str, mx.array]]:
    return cast(list[tuple[str, mx.array]], tree_flatten(module.parameters()))


def _tie(cache: list[Any], out: mx.array) -> None:
    """Make the last layer cache depend on ``out`` (see the module docstring)."""
    if not cache:
        return
    c = cache[-1]
    keys = getattr(c, "keys", None)
    if isinstance(keys, mx.array):
        c.keys = mx.depends(keys, out)
    elif isinstance(keys, (tuple, list)) and keys:  # a quantized cache: (packed, scales, biases)
        c.keys = type(keys)([mx.depends(keys[0], out), *keys[1:]])


def _masks(h: mx.array, layers: list[DecoderLayer], cache: list[Any], window: int) -> tuple[Any, Any]:
    """The full and sliding masks for these layers (as ``Olmo3Model`` builds them, from this rank's caches)."""
    kinds = [layer.layer_type for layer in layers]
    full = create_attention_mask(h, cache[kinds.index(FULL)]) if FULL in kinds else None
    sliding = create_attention_mask(h, cache[kinds.index(SLIDING)], window_size=window) if SLIDING in kinds else None
    return full, sliding


class Shard:
    """What every rank's part offers the replication layer (``olmo3.parallel.replicate``)."""

    rank: int
    layout: Layout
    args: ModelArgs
    group: Any
    module: nn.Module

    def make_cache(self) -> list[Any]:
        raise NotImplementedError

    def forward(self, ids: mx.array, length: int, cache: list[Any]) -> mx.array:
        """``ids`` [1, L] (this rank's copy; only rank 0's are real in a pipeline). Rank 0 returns the logits
        [1, L, V]; the others an array whose evaluation completes their part of the pass."""
        raise NotImplementedError

    def weight_bytes(self) -> int:
        return sum(v.nbytes for _, v in _flat(self.module))


class TensorShard(Shard):
    def __init__(self, model: Model, group: Any, layout: Layout, rank: int):
        self.module, self.group, self.layout, self.rank, self.args = model, group, layout, rank, model.args

    def make_cache(self) -> list[Any]:
        return self.module.make_cache()

    def forward(self, ids: mx.array, length: int, cache: list[Any]) -> mx.array:
        model = self.module
        h = model.model(ids, cache)  # [1, L, E] (normed), the same on every rank after the last all_sum
        _tie(cache, h)
        if self.rank != 0:
            return h
        if self.args.tie_word_embeddings:
            return model.model.embed_tokens.as_linear(h)
        return model.lm_head(h)


class _Stage(nn.Module):
    """``model.*`` of a pipeline stage: its decoder layers, and on rank 0 the embedding and the final norm."""

    def __init__(self, args: ModelArgs, start: int, end: int, first: bool):
        super().__init__()
        self.layers = [DecoderLayer(args, args.layer_types[i]) for i in range(start, end)]
        if first:
            self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
            self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)


class _StageModel(nn.Module):
    def __init__(self, args: ModelArgs, start: int, end: int, first: bool):
        super().__init__()
        self.model = _Stage(args, start, end, first)
        if first and not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)


class PipelineShard(Shard):
    def __init__(
        self, module: _StageModel, group: Any, layout: Layout, rank: int, args: ModelArgs, dtype: Any, handover: str
    ):
        self.module, self.group, self.layout, self.rank, self.args = module, group, layout, rank, args
        self.dtype, self.handover = dtype, handover
        self.start = layout.ranges[rank][0]

    def make_cache(self) -> list[Any]:
        from mlx_lm.models.cache import KVCache, RotatingKVCache

        return [
            KVCache() if layer.layer_type == FULL else RotatingKVCache(max_size=self.args.sliding_window)
            for layer in self.module.model.layers
        ]

    def _run(self, h: mx.array, cache: list[Any]) -> mx.array:
        layers = self.module.model.layers
        full, sliding = _masks(h, layers, cache, self.args.sliding_window)
        for layer, c in zip(layers, cache, strict=True):
            h = layer(h, full if layer.layer_type == FULL else sliding, cache=c)
        return h.astype(self.dtype)

    def forward(self, ids: mx.array, length: int, cache: list[Any]) -> mx.array:
        r, n, g = self.rank, self.layout.world, self.group
        shape = (1, length, self.args.hidden_size)
        stage = self.module.model
        if self.handover == "sendrecv":
            # 0 → 1 → … → n-1 by send/recv; the way back to rank 0 is one all_sum to which the last stage adds its
            # output and everyone else zeros that wait for their own send (a receive on rank 0 could be evaluated
            # before its send: nothing orders two arrays that do not depend on each other).
            if r == 0:
                h = stage.embed_tokens(ids).astype(self.dtype)
            else:
                h = mx.distributed.recv(shape, self.dtype, r - 1, group=g)
            h = self._run(h, cache)
            if r < n - 1:
                h = mx.depends(mx.zeros(shape, self.dtype), mx.distributed.send(h, r + 1, group=g))
            out = mx.distributed.all_sum(h, group=g)
        else:
            # No send/recv: hop k carries stage k's output to stage k+1 as an all_sum in which everyone else adds
            # zeros. The zeros depend on the previous hop, so every rank runs the hops in the same order.
            x = stage.embed_tokens(ids).astype(self.dtype) if r == 0 else None
            prev: mx.array | None = None
            for hop in range(n):
                if hop == r:
                    assert x is not None
                    contribution = self._run(x, cache)
                else:
                    contribution = mx.zeros(shape, self.dtype)
                    if prev is not None:
                        contribution = mx.depends(contribution, prev)
                prev = mx.distributed.all_sum(contribution, group=g)
                if hop == r - 1:
                    x = prev
            assert prev is not None
            out = prev
        _tie(cache, out)
        if r != 0:
            return out
        h = stage.norm(out)
        if self.args.tie_word_embeddings:
            return stage.embed_tokens.as_linear(h)
        return self.module.lm_head(h)


def _hidden_dtype(reader: SliceReader) -> Any:
    """The hidden state's dtype (what goes from rank to rank): the embedding's, promoted with the norms'."""
    names = {"F32": mx.float32, "F16": mx.float16, "BF16": mx.bfloat16}
    embed = "model.embed_tokens.scales" if "model.embed_tokens.scales" in reader else "model.embed_tokens.weight"
    a = names.get(reader.dtype(embed), mx.float32)
    b = names.get(reader.dtype("model.norm.weight"), a)
    return (mx.zeros((1,), a) * mx.zeros((1,), b)).dtype  # lazy: only the dtype is read, nothing is computed


def load_shard(
    args: ModelArgs,
    quant: dict[str, Any] | None,
    reader: SliceReader | None,
    group: Any,
    layout: Layout,
    rank: int,
    *,
    handover: str = "sendrecv",
    dtype: Any = None,
) -> Shard:
    """Build rank ``rank``'s part and load its slices (only those) from ``reader``.

    ``reader`` None: random weights made here in ``dtype``, layer by layer (``olmo3 bench parallel``: a 32B-shaped
    part without 18 GB of files)."""
    if layout.mode == "tensor":
        return _tensor(args, quant, reader, group, layout, rank, dtype)
    return _pipeline(args, quant, reader, group, layout, rank, handover, dtype)


def _materialise(module: nn.Module, layers: list[Any], reader: SliceReader | None, dtype: Any) -> None:
    """Random weights (no reader): cast, then compute them one layer at a time; loaded ones: compute them."""
    if reader is None and dtype is not None:
        module.set_dtype(dtype)
    for layer in layers:
        mx.eval(layer.parameters())
    mx.eval(module.parameters())
    module.eval()


def _quant_of(quant: dict[str, Any] | None, path: str, is_quantized: Any) -> dict[str, Any] | None:
    """How the linear layer at ``path`` is quantized (None: it is not), as the loader's ``nn.quantize`` would."""
    if not quant or not is_quantized(path):
        return None
    q = {
        "group_size": int(quant.get("group_size", 64)),
        "bits": int(quant["bits"]),
        "mode": quant.get("mode", "affine"),
    }
    override = quant.get(path)
    return {**q, **override} if isinstance(override, dict) else q


def _distributed_linear(
    kind: str, in_dims: int, out_dims: int, bias: bool, q: dict[str, Any] | None, group: Any
) -> Any:
    """``mlx.nn``'s sharded linear layer of this rank's shape: all-to-sharded (split outputs) or sharded-to-all (split
    inputs, then ``all_sum``), quantized or not. Built at its local shape: the full matrix is never made."""
    if q is None:
        plain = nn.AllToShardedLinear if kind == "all-to-sharded" else nn.ShardedToAllLinear
        return plain(in_dims, out_dims, bias=bias, group=group)
    quantized = nn.QuantizedAllToShardedLinear if kind == "all-to-sharded" else nn.QuantizedShardedToAllLinear
    return quantized(
        in_dims, out_dims, bias=bias, group_size=q["group_size"], bits=q["bits"], mode=q["mode"], group=group
    )


def _tensor(
    args: ModelArgs,
    quant: dict[str, Any] | None,
    reader: SliceReader | None,
    group: Any,
    layout: Layout,
    rank: int,
    dtype: Any,
) -> TensorShard:
    n = layout.world
    model = Model(args)  # MLX is lazy: weights that are replaced below are never computed
    if rank != 0 and not args.tie_word_embeddings:
        model.pop("lm_head")  # rank 0 alone samples (module docstring)
    is_quantized = (lambda path: f"{path}.scales" in reader) if reader is not None else (lambda path: True)
    _quantize(model, quant, is_quantized)  # the embedding and the head, as stored
    e, hd, bias = args.hidden_size, args.head_dim, args.attention_bias
    q_width, kv_width, mlp = args.num_attention_heads * hd, args.num_key_value_heads * hd, args.intermediate_size
    for i, layer in enumerate(model.model.layers):
        a, m, at = layer.self_attn, layer.mlp, f"model.layers.{i}"

        def linear(kind: str, path: str, in_dims: int, out_dims: int, b: bool = False) -> Any:
            return _distributed_linear(kind, in_dims, out_dims, b, _quant_of(quant, path, is_quantized), group)

        if layout.qk_norm == "local":  # q_proj, k_proj and the norms stay the model's own, whole
            qs, ks = q_width // n, kv_width // n
            a.heads = (slice(rank * qs, (rank + 1) * qs), slice(rank * ks, (rank + 1) * ks))
        else:
            a.q_proj = linear("all-to-sharded", f"{at}.self_attn.q_proj", e, q_width, bias)
            a.k_proj = linear("all-to-sharded", f"{at}.self_attn.k_proj", e, kv_width, bias)
            a.q_norm = nn.RMSNorm(q_width // n, eps=args.rms_norm_eps)
            a.k_norm = nn.RMSNorm(kv_width // n, eps=args.rms_norm_eps)
            a.group = group
        a.v_proj = linear("all-to-sharded", f"{at}.self_attn.v_proj", e, kv_width, bias)
        a.o_proj = linear("sharded-to-all", f"{at}.self_attn.o_proj", q_width, e, bias)
        a.n_heads, a.n_kv_heads = a.n_heads // n, a.n_kv_heads // n
        m.gate_proj = linear("all-to-sharded", f"{at}.mlp.gate_proj", e, mlp)
        m.up_proj = linear("all-to-sharded", f"{at}.mlp.up_proj", e, mlp)
        m.down_proj = linear("sharded-to-all", f"{at}.mlp.down_proj", mlp, e)
    if reader is not None:
        weights = []
        for name, _ in _flat(model):
            axis = split_axis(name, layout.qk_norm)
            weights.append((name, reader.read(name, axis, rank, n) if axis is not None else reader.read(name)))
        model.load_weights(weights, strict=True)
    _materialise(model, model.model.layers, reader, dtype)
    return TensorShard(model, group, layout, rank)


def _pipeline(
    args: ModelArgs,
    quant: dict[str, Any] | None,
    reader: SliceReader | None,
    group: Any,
    layout: Layout,
    rank: int,
    handover: str,
    dtype: Any,
) -> PipelineShard:
    start, end = layout.ranges[rank]
    module = _StageModel(args, start, end, rank == 0)

    def global_name(path: str) -> str:
        """``model.layers.{j}…`` of this stage is ``model.layers.{start + j}…`` in the files."""
        parts = path.split(".")
        if parts[:2] == ["model", "layers"] and len(parts) > 2:
            parts[2] = str(start + int(parts[2]))
        return ".".join(parts)

    if reader is None:
        _quantize(module, quant, lambda path: True)
    else:
        _quantize(module, quant, lambda path: f"{global_name(path)}.scales" in reader)
        weights = [(name, reader.read(global_name(name))) for name, _ in _flat(module)]
        module.load_weights(weights, strict=True)
    _materialise(module, module.model.layers, reader, dtype)
    hidden = _hidden_dtype(reader) if reader is not None else (dtype or mx.float32)
    return PipelineShard(module, group, layout, rank, args, hidden, handover)
