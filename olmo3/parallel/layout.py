"""Which rank holds which part of Olmo-3, and the checks that refuse a split that cannot work. MLX-free.

**Tensor parallel** (``--parallel tensor``): every rank runs every layer with ``1/N`` of its heads and of its MLP.
q/k/v and gate/up are split by output features (whole heads per rank: the rows of head ``h`` are
``h*D .. (h+1)*D``), o and down by input features. Grouped-query attention needs the *key/value* heads to split
evenly too (query head ``i`` reads KV head ``i // (H/Hk)``; with both split into ``N`` contiguous blocks, each rank's
query heads read exactly its KV heads): Olmo-3 32B has 8 KV heads, so 2, 4 or 8 ranks. Quantized o and down
projections are split by input columns, so each rank's share must hold whole quantization groups.

q/k-norm spans all heads (``olmo3.model.model.Attention``), so by default (``qk_norm="local"``) every rank holds
q_proj, k_proj and the two norms **whole**: it projects and normalises the full width and keeps its heads, with no
collective. ``qk_norm="collective"`` splits them by heads like v_proj and adds up the ranks' sums of squares with
one small ``all_sum`` per layer: less memory (Olmo-3 32B at 2 ranks: 6 % less per rank), one more collective per
layer and many small operations per token (what a decode step pays for: ``olmo3 bench parallel``).

**Pipeline parallel** (``--parallel pipeline``): each rank runs a contiguous range of layers. Rank 0 also holds the
embedding, the final norm and the head (it embeds the prompt and samples: the hidden state goes round the ring and
comes back to it), so the ranges are balanced by bytes with those counted on rank 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from ..model.config import FULL, SLIDING, ModelArgs

__all__ = [
    "MODES",
    "QK_NORMS",
    "Layout",
    "Mode",
    "ParallelError",
    "balance_layers",
    "check_tensor_split",
    "layer_sizes",
    "make_layout",
    "rank_kv_per_token",
    "rank_weight_bytes",
    "split_axis",
]

Mode = Literal["tensor", "pipeline"]
MODES: Final = ("tensor", "pipeline")
QK_NORMS: Final = ("local", "collective")


class ParallelError(ValueError):
    """A split that cannot work (one line, says what would): the CLI prints it and exits 2."""


@dataclass(frozen=True)
class Layout:
    """How a model is split over ``world`` ranks: the mode, the layers each rank runs (``[start, end)``) and, for
    tensor parallelism, how q/k-norm sees the full width (module docstring)."""

    mode: Mode
    world: int
    ranges: tuple[tuple[int, int], ...]
    qk_norm: str = "local"

    def layers_of(self, rank: int) -> range:
        start, end = self.ranges[rank]
        return range(start, end)

    def key(self) -> str:
        """A machine form that changes whenever the split does (it goes into spilled caches' fingerprints)."""
        if self.mode == "tensor":  # the other q/k-norm does other (equal up to rounding) arithmetic: another key
            return f"tensor/{self.world}" + ("" if self.qk_norm == "local" else f"/qk-{self.qk_norm}")
        return f"pipeline/{self.world}/" + ",".join(f"{a}:{b}" for a, b in self.ranges)

    def tag(self, rank: int) -> str:
        """For file names: ``tensor2-r0``."""
        return f"{self.mode}{self.world}-r{rank}"

    def describe(self) -> str:
        if self.mode == "tensor":
            qk = "whole q/k projections on every rank" if self.qk_norm == "local" else "q/k-norm by all_sum"
            return f"tensor parallel over {self.world} ranks (each holds 1/{self.world} of every layer; {qk})"
        parts = ", ".join(f"rank {r}: layers {a}-{b - 1}" for r, (a, b) in enumerate(self.ranges))
        return f"pipeline parallel over {self.world} ranks ({parts})"


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n + 1) if n % d == 0]


def check_tensor_split(args: ModelArgs, quantization: Mapping[str, Any] | None, world: int) -> None:
    """Raise :class:`ParallelError` unless ``world`` ranks can each take whole heads and whole groups."""
    if world < 2:
        raise ParallelError("--parallel needs at least 2 ranks: start it with mlx.launch -n 2 (or a hostfile)")
    hk = args.num_key_value_heads
    if hk % world:
        ok = ", ".join(map(str, _divisors(hk))) or "none"
        raise ParallelError(
            f"--parallel tensor: the model's {hk} key/value heads cannot be split evenly across {world} ranks "
            f"(each rank needs whole KV heads); use {ok} ranks, or --parallel pipeline"
        )
    if args.num_attention_heads % world:  # implied by the KV heads for Olmo-3, checked for odd configs
        raise ParallelError(
            f"--parallel tensor: {args.num_attention_heads} query heads cannot be split across {world} ranks"
        )
    if args.intermediate_size % world:
        raise ParallelError(
            f"--parallel tensor: the MLP width {args.intermediate_size} cannot be split evenly across {world} ranks"
        )
    if quantization:
        group = int(quantization.get("group_size", 64))
        for what, width in (
            ("o_proj", args.num_attention_heads * args.head_dim),
            ("down_proj", args.intermediate_size),
        ):
            if (width // world) % group:
                raise ParallelError(
                    f"--parallel tensor: each rank's share of {what} ({width // world} of {width} inputs) is not a "
                    f"whole number of {group}-wide quantization groups; use fewer ranks or --parallel pipeline"
                )


# What tensor parallelism does with each weight (by the name's tail): split along an axis, or keep whole.
_ROWS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")  # output features: rows (and their bias)
_COLS = ("o_proj", "down_proj")  # input features: columns (their bias is added once, after the all_sum)


def split_axis(name: str, qk_norm: str = "local") -> int | None:
    """Tensor parallel: the axis ``name`` is split along (0 rows, -1 columns), or None when every rank holds it."""
    parts = name.split(".")
    if len(parts) < 2:
        return None
    module, leaf = parts[-2], parts[-1]
    if qk_norm == "local" and module in ("q_proj", "k_proj", "q_norm", "k_norm"):  # whole: the norm is local
        return None
    if module in _ROWS:
        return 0
    if module in _COLS:
        return None if leaf == "bias" else -1
    if module in ("q_norm", "k_norm"):  # one weight per projected feature: the rank's heads' slice
        return 0
    return None


def layer_sizes(sizes: Mapping[str, int], num_layers: int) -> tuple[list[int], int]:
    """Bytes per decoder layer and the bytes outside the layers (embedding, final norm, head) from
    ``{tensor name: bytes}``."""
    per_layer = [0] * num_layers
    extra = 0
    for name, n in sizes.items():
        if name.startswith("model.layers."):
            per_layer[int(name.split(".")[2])] += n
        else:
            extra += n
    return per_layer, extra


def balance_layers(per_layer: list[int], world: int, first_extra: int = 0) -> tuple[tuple[int, int], ...]:
    """Contiguous ranges, one per rank, that minimise the largest rank's bytes (rank 0 also holds ``first_extra``).

    Every rank gets at least one layer. Dynamic programming over split points: ``world`` and the layer count are
    small (Olmo-3 32B: 64 layers)."""
    n = len(per_layer)
    if world < 2:
        raise ParallelError("--parallel needs at least 2 ranks: start it with mlx.launch -n 2 (or a hostfile)")
    if world > n:
        raise ParallelError(f"--parallel pipeline: {world} ranks but the model has only {n} layers")
    prefix = [0]
    for b in per_layer:
        prefix.append(prefix[-1] + b)
    inf = float("inf")
    # cost[k][j]: the best largest share when ranks 0..k-1 hold layers 0..j-1; cut[k][j]: where rank k-1 starts.
    cost = [[inf] * (n + 1) for _ in range(world + 1)]
    cut = [[0] * (n + 1) for _ in range(world + 1)]
    cost[0][0] = 0
    for k in range(1, world + 1):
        for j in range(k, n - (world - k) + 1):
            for i in range(k - 1, j):
                share = prefix[j] - prefix[i] + (first_extra if k == 1 else 0)
                c = max(cost[k - 1][i], share)
                if c < cost[k][j]:
                    cost[k][j], cut[k][j] = c, i
    ranges: list[tuple[int, int]] = []
    j = n
    for k in range(world, 0, -1):
        i = cut[k][j]
        ranges.append((i, j))
        j = i
    return tuple(reversed(ranges))


def make_layout(
    mode: str,
    world: int,
    args: ModelArgs,
    sizes: Mapping[str, int],
    quantization: Mapping[str, Any] | None = None,
    qk_norm: str = "local",
) -> Layout:
    """The layout for ``mode`` over ``world`` ranks (``sizes``: bytes of each tensor, from the file headers)."""
    if mode not in MODES:
        raise ParallelError(f"--parallel {mode}: use tensor or pipeline")
    if mode == "tensor":
        if qk_norm not in QK_NORMS:
            raise ParallelError(f"q/k-norm {qk_norm!r}: use {' or '.join(QK_NORMS)}")
        check_tensor_split(args, quantization, world)
        return Layout("tensor", world, tuple((0, args.num_hidden_layers) for _ in range(world)), qk_norm)
    per_layer, extra = layer_sizes(sizes, args.num_hidden_layers)
    return Layout("pipeline", world, balance_layers(per_layer, world, extra))


def rank_weight_bytes(layout: Layout, sizes: Mapping[str, int], rank: int) -> int:
    """The bytes of weights ``rank`` holds (what it reads from the files)."""
    total = 0
    start, end = layout.ranges[rank]
    for name, n in sizes.items():
        if name.startswith("model.layers."):
            i = int(name.split(".")[2])
            if layout.mode == "pipeline" and not start <= i < end:
                continue
            split = layout.mode == "tensor" and split_axis(name, layout.qk_norm) is not None
            total += n // layout.world if split else n
        elif name == "model.embed_tokens.weight" or name.startswith("model.embed_tokens."):
            # Tensor parallel: every rank embeds (a lookup, no collective); pipeline: rank 0 only.
            total += n if layout.mode == "tensor" or rank == 0 else 0
        elif name.startswith("model.norm."):  # pipeline: rank 0 applies it; tensor: every rank (a tiny vector)
            total += n if layout.mode == "tensor" or rank == 0 else 0
        elif rank == 0:  # the head: rank 0 alone samples
            total += n
    return total


def rank_kv_per_token(layout: Layout, args: ModelArgs, kv_full: int, kv_sliding: int, rank: int) -> tuple[int, int]:
    """A rank's share of the KV bytes per token (full layers, sliding layers)."""
    if layout.mode == "tensor":
        return kv_full // layout.world, kv_sliding // layout.world
    n_full = max(1, args.layer_types.count(FULL))
    n_sliding = max(1, args.layer_types.count(SLIDING))
    mine = [args.layer_types[i] for i in layout.layers_of(rank)]
    return kv_full * mine.count(FULL) // n_full, kv_sliding * mine.count(SLIDING) // n_sliding
