"""Olmo-3 in MLX, written to be read.

Olmo-3 (Ai2, 2025) is a decoder-only transformer. Compared with a Llama-style model it differs in four ways,
and each shows up below:

1. **Post-norm blocks.** Each branch (attention, MLP) is normalised *after* it runs and before it is added
   back to the residual stream: ``h = x + norm(attn(x))``. There is no pre-norm on the input.
2. **Q/K RMSNorm over the full projected width.** The query and key projections are RMS-normalised across all
   heads together (``q_norm`` has ``n_heads * head_dim`` weights), before RoPE. Normalising q and k bounds the
   attention logits, which keeps long-context training stable without a softcap (OLMo 2 introduced it).
   (Split across machines by heads, a machine's slice does not know the full width's mean square: each machine
   either computes the whole q and k itself, or adds up the machines' partial sums: see ``Attention``.)
3. **Hybrid attention.** Three of every four layers use sliding-window attention (4,096 tokens); every fourth
   layer attends to the whole context. Which is which comes from ``config.layer_types``.
4. **RoPE per layer type.** Sliding layers use plain RoPE (θ = 500,000); full layers use the configured scaling
   (YaRN, factor 8 over an original 8,192 context) so they can reach 65,536 tokens. Sliding layers never see
   positions further apart than the window, so they need no scaling (and YaRN there measurably hurts).

The weight names are exactly those of Hugging Face ``Olmo3ForCausalLM`` (``model.layers.N.self_attn.q_proj``…),
so checkpoints load without renaming. The reference implementation is transformers' ``modeling_olmo3.py``;
``tests/test_parity.py`` checks our logits against it. mlx-lm's ``models/olmo3.py`` is the MLX port we learned
from; the cache classes and attention kernels are mlx-lm's and MLX's own.

Shapes use: B batch, L new tokens this call, S keys visible (cached + new), H query heads, Hk key/value heads,
D head_dim, E hidden size, V vocab.
"""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.activations import swiglu
from mlx_lm.models.base import create_attention_mask, scaled_dot_product_attention
from mlx_lm.models.cache import KVCache, RotatingKVCache

from .config import FULL, SLIDING, ModelArgs
from .tensors import dropped_on_load

__all__ = ["FULL", "SLIDING", "Model", "ModelArgs"]


class YarnRoPE(nn.Module):
    """RoPE with YaRN frequency interpolation (Peng et al. 2023), as transformers computes it.

    Low-frequency dimensions (long wavelengths, beyond the original context) are interpolated by ``factor``;
    high-frequency dimensions are kept; a linear ramp between ``beta_fast`` and ``beta_slow`` rotations
    blends the two. The rotated q and k are scaled by ``attention_factor`` (default ``0.1·ln(factor) + 1``),
    which multiplies the attention logits by its square, compensating the entropy change of a longer context.
    """

    def __init__(self, dims: int, p: dict[str, Any]):
        super().__init__()
        base = float(p["rope_theta"])
        factor = float(p["factor"])
        original = float(p["original_max_position_embeddings"])
        beta_fast = float(p.get("beta_fast") or 32)
        beta_slow = float(p.get("beta_slow") or 1)
        attention_factor = p.get("attention_factor")
        if attention_factor is None:
            attention_factor = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0

        def correction_dim(rotations: float) -> float:
            return dims * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low: float = max(math.floor(correction_dim(beta_fast)), 0)
        high: float = min(math.ceil(correction_dim(beta_slow)), dims - 1)
        if low == high:
            high += 0.001  # avoid a zero-width ramp
        ramp = mx.clip((mx.arange(dims // 2, dtype=mx.float32) - low) / (high - low), 0, 1)
        keep = 1.0 - ramp  # 1 → extrapolate (keep the frequency), 0 → interpolate (divide by factor)

        pos_freqs = base ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims)  # wavelengths / 2π, [D/2]
        inv_freq = (1.0 / (factor * pos_freqs)) * (1 - keep) + (1.0 / pos_freqs) * keep
        self._freqs = 1.0 / inv_freq  # mx.fast.rope takes periods, not inverse frequencies
        self.scale = float(attention_factor)
        self.dims = dims

    def __call__(self, x: mx.array, offset: int = 0) -> mx.array:
        x = mx.fast.rope(x, self.dims, traditional=False, base=None, scale=1.0, offset=offset, freqs=self._freqs)
        return x * self.scale if self.scale != 1.0 else x


def make_rope(dims: int, p: dict[str, Any]) -> nn.Module:
    """Plain RoPE for ``rope_type == "default"``, YaRN otherwise."""
    if p["rope_type"] == "yarn":
        return YarnRoPE(dims, p)
    return nn.RoPE(dims, traditional=False, base=float(p["rope_theta"]))


def sharded_qk_norm(
    q: mx.array, k: mx.array, q_norm: nn.RMSNorm, k_norm: nn.RMSNorm, group: Any
) -> tuple[mx.array, mx.array]:
    """``q_norm(q), k_norm(k)`` when this rank holds only its slice of the heads (tensor parallelism).

    RMSNorm divides by the root mean square over the **full** projected width, ``sqrt(sum(q²) / (H*D) + eps)``.
    A rank holding ``H/N`` heads sees only its slice, and the heads differ in scale, so the slice's mean square is
    not the full one: normalising it alone would compute a different model. Each rank therefore takes the sum of
    squares of its slice (in float32), one ``all_sum`` adds the ``N`` partial sums, and every rank divides its
    slice by the full width's root mean square and scales it by its slice of the weight.

    q's and k's partial sums travel together (``[B, L, 2]``): one small collective per layer rather than two,
    which also keeps the collectives in one order on every rank. This is the memory-lean way (each rank holds
    ``1/N`` of q_proj and k_proj); the default is to hold them whole and need no collective (``Attention``).
    """
    n = group.size()
    f32 = mx.float32
    sq = mx.stack([mx.sum(mx.square(q.astype(f32)), axis=-1), mx.sum(mx.square(k.astype(f32)), axis=-1)], axis=-1)
    sq = mx.distributed.all_sum(sq, group=group)  # [B, L, 2]: the full widths' sums of squares
    inv_q = mx.rsqrt(sq[..., 0:1] / (q.shape[-1] * n) + q_norm.eps)  # 1 / RMS over all H*D features
    inv_k = mx.rsqrt(sq[..., 1:2] / (k.shape[-1] * n) + k_norm.eps)
    q = (q.astype(f32) * inv_q).astype(q.dtype) * q_norm.weight
    k = (k.astype(f32) * inv_k).astype(k.dtype) * k_norm.weight
    return q, k


class Attention(nn.Module):
    """Multi-head attention with grouped KV heads, Q/K RMSNorm and per-layer-type RoPE.

    ``q_norm``/``k_norm`` normalise the whole projected width (all heads at once), *before* the reshape to
    heads and before RoPE. Without them the dot products q·k can grow without bound during training; with
    them the logits stay in a range where softmax neither saturates nor collapses.

    Because the norm spans all heads, tensor parallelism (``olmo3.parallel``: each rank holds some heads) cannot
    normalise a rank's slice on its own: the slice's mean square is not the full width's. Two ways out:

    * ``heads`` (the default): every rank keeps q_proj, k_proj and both norms **whole**, projects and normalises
      the full width exactly as one machine does, and keeps its own heads' columns (``heads = (q slice, k slice)``).
      No collective, and the same arithmetic as one machine; the price is memory: the whole q and k projections
      on every rank (Olmo-3 32B: ``(H + Hk)·D × E`` = 6 % more weights per rank at 2 ranks) and their reads each
      token. Computing only the norm, e.g. as ``xᵀ(W_qᵀW_q)x`` with a Gram matrix, would cost more: that matrix
      is ``E × E`` per projection and needs high precision (cancellation), where the 4-bit q_proj is a quarter
      of its bytes in bf16.
    * ``group`` (the memory-lean way): the projections are split by heads too, and :func:`sharded_qk_norm` adds
      up the ranks' partial sums of squares with one small collective per layer before dividing.

    The layer's cache is a ``KVCache`` (full attention) or a ``RotatingKVCache`` (sliding window); both expose
    ``offset`` (absolute position of the first new token) and ``update_and_fetch``.
    """

    def __init__(self, args: ModelArgs, layer_type: str):
        super().__init__()
        self.n_heads = args.num_attention_heads
        self.n_kv_heads = args.num_key_value_heads
        self.head_dim = args.head_dim
        self.scale = self.head_dim**-0.5
        q_width = self.n_heads * self.head_dim
        kv_width = self.n_kv_heads * self.head_dim
        bias = args.attention_bias

        self.q_proj = nn.Linear(args.hidden_size, q_width, bias=bias)
        self.k_proj = nn.Linear(args.hidden_size, kv_width, bias=bias)
        self.v_proj = nn.Linear(args.hidden_size, kv_width, bias=bias)
        self.o_proj = nn.Linear(q_width, args.hidden_size, bias=bias)
        self.q_norm = nn.RMSNorm(q_width, eps=args.rms_norm_eps)
        self.k_norm = nn.RMSNorm(kv_width, eps=args.rms_norm_eps)
        self.rope = make_rope(self.head_dim, args.rope[layer_type])
        # Tensor parallel (see the class docstring): this rank's columns of the full q and k, or the group whose
        # partial sums of squares make up the full width's.
        self.heads: tuple[slice, slice] | None = None
        self.group: Any = None

    def __call__(self, x: mx.array, mask: Any = None, cache: Any = None) -> mx.array:
        B, L, _ = x.shape  # x: [B, L, E]
        q, k = self.q_proj(x), self.k_proj(x)  # [B, L, H*D], [B, L, Hk*D]
        if self.group is None:
            q, k = self.q_norm(q), self.k_norm(k)
            if self.heads is not None:  # tensor parallel: the full width was projected and normalised; keep ours
                q, k = q[..., self.heads[0]], k[..., self.heads[1]]
        else:  # this rank projected only its H/N and Hk/N heads: normalise over the full width all the same
            q, k = sharded_qk_norm(q, k, self.q_norm, self.k_norm, self.group)
        v = self.v_proj(x)  # [B, L, Hk*D]

        q = q.reshape(B, L, self.n_heads, self.head_dim).transpose(0, 2, 1, 3)  # [B, H, L, D]
        k = k.reshape(B, L, self.n_kv_heads, self.head_dim).transpose(0, 2, 1, 3)  # [B, Hk, L, D]
        v = v.reshape(B, L, self.n_kv_heads, self.head_dim).transpose(0, 2, 1, 3)  # [B, Hk, L, D]

        offset = cache.offset if cache is not None else 0  # position of the first new token
        q = self.rope(q, offset=offset)
        k = self.rope(k, offset=offset)
        if cache is not None:
            # Append this call's keys/values; get back everything this layer may attend to.
            k, v = cache.update_and_fetch(k, v)  # [B, Hk, S, D] (a quantized cache returns tuples)

        # Grouped-query attention: the kernel broadcasts each KV head over H/Hk query heads.
        out = scaled_dot_product_attention(q, k, v, cache=cache, scale=self.scale, mask=mask)  # [B, H, L, D]
        out = out.transpose(0, 2, 1, 3).reshape(B, L, -1)  # [B, L, H*D]
        return self.o_proj(out)  # [B, L, E]


class MLP(nn.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.up_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.down_proj = nn.Linear(args.intermediate_size, args.hidden_size, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        # swiglu(g, u) = silu(g) * u, as one compiled (fused) MLX kernel.
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))  # [B, L, E]


class DecoderLayer(nn.Module):
    """One post-norm transformer block: ``h = x + norm(attn(x)); out = h + norm(mlp(h))``."""

    def __init__(self, args: ModelArgs, layer_type: str):
        super().__init__()
        self.layer_type = layer_type
        self.self_attn = Attention(args, layer_type)
        self.mlp = MLP(args)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_feedforward_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, mask: Any = None, cache: Any = None) -> mx.array:
        h = x + self.post_attention_layernorm(self.self_attn(x, mask, cache))
        return h + self.post_feedforward_layernorm(self.mlp(h))


class Olmo3Model(nn.Module):
    """Embedding, the stack of decoder layers, and the final norm (``model.*`` in the checkpoint).

    Two masks are built per call, because the two layer kinds see different keys:

    * full layers: plain causal — new token *i* sees every earlier position;
    * sliding layers: causal **and** at most ``sliding_window - 1`` positions back.

    Both depend on the cache (how many keys it holds, whether the ring buffer has wrapped), so each mask is
    built from a representative layer of its kind. For one new token (decoding) neither needs a mask: the
    rotating cache already holds exactly the last ``window`` keys. ``mlx_lm``'s ``create_attention_mask``
    returns the string ``"causal"`` when the kernel can apply the mask itself.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [DecoderLayer(args, lt) for lt in args.layer_types]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self._first_full = args.layer_types.index(FULL) if FULL in args.layer_types else None
        self._first_sliding = args.layer_types.index(SLIDING) if SLIDING in args.layer_types else None

    def __call__(self, inputs: mx.array, cache: list[Any] | None = None) -> mx.array:
        h = self.embed_tokens(inputs)  # [B, L] -> [B, L, E]
        if cache is None:
            cache = [None] * len(self.layers)

        full_mask = sliding_mask = None
        if self._first_full is not None:
            full_mask = create_attention_mask(h, cache[self._first_full])
        if self._first_sliding is not None:
            sliding_mask = create_attention_mask(h, cache[self._first_sliding], window_size=self.args.sliding_window)

        for layer, layer_cache in zip(self.layers, cache, strict=True):
            mask = full_mask if layer.layer_type == FULL else sliding_mask
            h = layer(h, mask, cache=layer_cache)
        return self.norm(h)  # [B, L, E]


class Model(nn.Module):
    """``Olmo3ForCausalLM``: the transformer plus the language-model head (or tied embeddings).

    ``model(tokens[B, L], cache=list) -> logits[B, L, V]``. Pass the list from ``make_cache()`` to keep keys
    and values between calls; it is updated in place.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.model = Olmo3Model(args)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    def __call__(self, inputs: mx.array, cache: list[Any] | None = None) -> mx.array:
        h = self.model(inputs, cache)  # [B, L, E]
        if self.args.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(h)  # [B, L, V]
        return self.lm_head(h)  # [B, L, V]

    @property
    def layers(self) -> list[DecoderLayer]:
        return self.model.layers

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """Drop checkpoint entries the MLX model does not have (rotary tables, a tied head)."""
        return {k: v for k, v in weights.items() if not dropped_on_load(k, self.args)}

    def make_cache(self) -> list[Any]:
        """One cache per layer, mixing two kinds to match the hybrid attention.

        * Full-attention layers get a ``KVCache``: it keeps every key and value (grows in 256-token steps),
          so memory grows linearly with the conversation, and it can always be trimmed (rewound).
        * Sliding layers get a ``RotatingKVCache(max_size=sliding_window)``: a ring buffer that never holds
          more than the window (plus, transiently, one prefill chunk). For Olmo-3 7B that caps 24 of 32
          layers at 4,096 tokens, so a 32K-token chat needs ~5.5 GiB of bf16 KV instead of ~16 GiB.

        The price: once a ring buffer has wrapped (``offset >= max_size``) the overwritten keys are gone, so
        the cache can no longer be trimmed back to an earlier point. ``trim_prompt_cache`` then silently
        does nothing. Regenerate and edit therefore restore snapshots taken at turn boundaries instead of
        trimming (see ``olmo3.session``).
        """
        return [
            KVCache() if lt == FULL else RotatingKVCache(max_size=self.args.sliding_window)
            for lt in self.args.layer_types
        ]
