"""How a model is split: heads and groups per rank, layer ranges balanced by bytes, what each rank holds and reads."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from olmo3.model.config import ModelArgs
from olmo3.model.tiny import tiny_config
from olmo3.parallel.layout import (
    ParallelError,
    balance_layers,
    check_tensor_split,
    make_layout,
    rank_kv_per_token,
    rank_weight_bytes,
    split_axis,
)


def args_32b() -> ModelArgs:
    return ModelArgs.from_config(
        tiny_config(
            100278,
            hidden_size=5120,
            num_hidden_layers=64,
            num_attention_heads=40,
            num_key_value_heads=8,
            intermediate_size=27648,
            head_dim=128,
            sliding_window=4096,
            max_position_embeddings=65536,
        )
    )


@pytest.mark.parametrize("world", [2, 4, 8])
def test_32b_splits_over_2_4_8_ranks(world):
    check_tensor_split(args_32b(), {"group_size": 64, "bits": 4}, world)


@pytest.mark.parametrize("world", [3, 5, 6, 16])
def test_32b_refuses_other_rank_counts_with_what_works(world):
    with pytest.raises(ParallelError) as e:
        check_tensor_split(args_32b(), None, world)
    msg = str(e.value)
    assert "8 key/value heads" in msg and f"across {world} ranks" in msg and "2, 4, 8" in msg
    assert "\n" not in msg


def test_quantized_share_must_hold_whole_groups():
    args = ModelArgs.from_config(tiny_config(384, hidden_size=64, num_attention_heads=4, num_key_value_heads=2))
    check_tensor_split(args, None, 2)  # o_proj's 64 inputs split in two: fine unquantized
    with pytest.raises(ParallelError, match="quantization groups"):
        check_tensor_split(args, {"group_size": 64, "bits": 4}, 2)


def test_one_rank_is_refused():
    with pytest.raises(ParallelError, match=r"mlx\.launch"):
        check_tensor_split(args_32b(), None, 1)


@pytest.mark.parametrize(
    ("name", "axis", "collective_axis"),
    [
        # By default q/k-norm is local: q_proj, k_proj and the norms are whole on every rank.
        ("model.layers.3.self_attn.q_proj.weight", None, 0),
        ("model.layers.3.self_attn.k_proj.scales", None, 0),
        ("model.layers.3.self_attn.q_norm.weight", None, 0),
        ("model.layers.3.self_attn.k_norm.weight", None, 0),
        ("model.layers.3.self_attn.v_proj.bias", 0, 0),
        ("model.layers.3.self_attn.o_proj.weight", -1, -1),
        ("model.layers.3.self_attn.o_proj.biases", -1, -1),
        ("model.layers.3.self_attn.o_proj.bias", None, None),
        ("model.layers.3.mlp.gate_proj.weight", 0, 0),
        ("model.layers.3.mlp.up_proj.biases", 0, 0),
        ("model.layers.3.mlp.down_proj.scales", -1, -1),
        ("model.layers.3.post_attention_layernorm.weight", None, None),
        ("model.embed_tokens.weight", None, None),
        ("lm_head.weight", None, None),
        ("model.norm.weight", None, None),
    ],
)
def test_split_axis(name, axis, collective_axis):
    assert split_axis(name) == axis
    assert split_axis(name, "collective") == collective_axis


def test_balance_is_contiguous_covers_every_layer_and_minimises_the_largest_share():
    per_layer = [10, 10, 10, 10, 10, 10, 10, 10]
    assert balance_layers(per_layer, 2) == ((0, 4), (4, 8))
    # Rank 0 also holds the embedding and head (30): it gets fewer layers.
    ranges = balance_layers(per_layer, 2, first_extra=30)
    assert ranges == ((0, 2), (2, 8))
    uneven = [5, 40, 5, 5, 5, 5, 5, 5, 5]
    r = balance_layers(uneven, 3)
    assert r[0][0] == 0 and r[-1][1] == len(uneven) and all(a[1] == b[0] for a, b in itertools.pairwise(r))
    shares = [sum(uneven[a:b]) for a, b in r]
    # No contiguous split into 3 does better (brute force).
    best = min(
        max(sum(uneven[:i]), sum(uneven[i:j]), sum(uneven[j:]))
        for i in range(1, len(uneven) - 1)
        for j in range(i + 1, len(uneven))
    )
    assert max(shares) == best


def test_pipeline_refuses_more_ranks_than_layers():
    with pytest.raises(ParallelError, match="only 3 layers"):
        balance_layers([1, 1, 1], 4)


def sizes_of(args: ModelArgs) -> dict[str, int]:
    from olmo3.model.tensors import expected_tensors

    return {n: math.prod(spec.shape) * 2 for n, spec in expected_tensors(args).items()}


def test_rank_shares_add_up():
    args = args_32b()
    sizes = sizes_of(args)
    total = sum(sizes.values())
    pipe = make_layout("pipeline", 2, args, sizes)
    assert sum(rank_weight_bytes(pipe, sizes, r) for r in range(2)) == total
    a, b = (rank_weight_bytes(pipe, sizes, r) for r in range(2))
    assert abs(a - b) / total < 0.02  # balanced by bytes
    embed, head = sizes["model.embed_tokens.weight"], sizes["lm_head.weight"]
    replicated = embed + sum(n for name, n in sizes.items() if "norm." in name and "_norm" not in name)
    qk = sum(n for name, n in sizes.items() if any(m in name for m in ("q_proj", "k_proj", "q_norm", "k_norm")))
    # q/k-norm by all_sum: every rank holds a quarter of each projection; the embedding and the norms whole; rank 0
    # also the head.
    tensor = make_layout("tensor", 4, args, sizes, qk_norm="collective")
    shares = [rank_weight_bytes(tensor, sizes, r) for r in range(4)]
    assert shares[0] - shares[1] == head
    assert sum(shares) == total + 3 * replicated
    # Local q/k-norm (the default): q_proj, k_proj and their norms whole on every rank too.
    local = [rank_weight_bytes(make_layout("tensor", 4, args, sizes), sizes, r) for r in range(4)]
    assert sum(local) == total + 3 * (replicated + qk)
    two = [
        rank_weight_bytes(make_layout("tensor", 2, args, sizes, qk_norm=q), sizes, 1) for q in ("local", "collective")
    ]
    assert 1.05 < two[0] / two[1] < 1.08  # Olmo-3 32B at 2 ranks: about 6 % more per rank
    full, sliding = rank_kv_per_token(tensor, args, 1000, 3000, 1)
    assert (full, sliding) == (250, 750)
    full, sliding = rank_kv_per_token(pipe, args, 1600, 4800, 0)
    layers = args.layer_types[pipe.ranges[0][0] : pipe.ranges[0][1]]
    assert full == 1600 * layers.count("full_attention") // 16


def test_layout_keys_differ_by_split():
    args = args_32b()
    sizes = sizes_of(args)
    keys = {make_layout(m, w, args, sizes).key() for m in ("tensor", "pipeline") for w in (2, 4)}
    keys.add(make_layout("tensor", 2, args, sizes, qk_norm="collective").key())
    assert len(keys) == 5
    with pytest.raises(ParallelError, match="local or collective"):
        make_layout("tensor", 2, args, sizes, qk_norm="gram")
    with pytest.raises(ParallelError, match="tensor or pipeline"):
        make_layout("data", 2, args, sizes)


def test_slice_reader_reads_only_the_slice(tmp_path):
    import mlx.core as mx

    from olmo3.parallel.slices import SliceReader

    rng = np.random.default_rng(0)
    full = {
        "a": mx.array(rng.standard_normal((8, 6)).astype(np.float32)),
        "b": mx.array(rng.standard_normal((4, 10)).astype(np.float32)).astype(mx.bfloat16),
        "q": mx.array(rng.integers(0, 2**31, (6, 4)).astype(np.uint32)),
        "v": mx.array(rng.standard_normal((12,)).astype(np.float32)),
    }
    path = tmp_path / "w.safetensors"
    mx.save_safetensors(str(path), full)
    reader = SliceReader([path])
    for name, x in full.items():
        parts = 2
        for part in range(parts):
            rows = reader.read(name, 0, part, parts)
            n = x.shape[0] // parts
            assert mx.array_equal(rows, x[part * n : (part + 1) * n]), name
            assert rows.dtype == x.dtype
            if x.ndim == 2:
                cols = reader.read(name, -1, part, parts)
                m = x.shape[1] // parts
                assert mx.array_equal(cols, x[:, part * m : (part + 1) * m]), name
    before = reader.bytes_read
    reader.read("a", -1, 1, 2)
    assert reader.bytes_read - before == full["a"].nbytes // 2
    assert mx.array_equal(reader.read("b"), full["b"])
    with pytest.raises(ValueError, match="equal parts"):
        reader.read("a", -1, 0, 4)


def test_the_cluster_fits_in_the_budgets_added_up_and_each_part_in_its_rank(tiny_model_dir):
    """Olmo-3 32B at 4 bits (~18 GB) on two machines of 12 GB: too much for one, fine for both together."""
    import dataclasses

    from olmo3.fit import ModelShape, ModelWontFitError, plan_load
    from olmo3.memory import MemoryBudget
    from olmo3.model.modelinfo import inspect_model_dir
    from olmo3.model.tensors import expected_tensors
    from olmo3.parallel.cluster import RankReport, cluster_fit

    args = args_32b()
    quant = {"group_size": 64, "bits": 4}
    sizes = {
        n: math.prod(spec.shape) * (4 if "U32" in spec.dtypes else 2)
        for n, spec in expected_tensors(args, quant).items()
    }
    per_token = 2 * args.num_key_value_heads * args.head_dim * 2
    info = dataclasses.replace(
        inspect_model_dir(tiny_model_dir),
        weight_bytes=sum(sizes.values()),
        kv_bytes_per_token_full=per_token * 16,
        kv_bytes_per_token_sliding=per_token * 48,
        sliding_window=4096,
        max_position_embeddings=65536,
    )
    gb = 1 << 30
    one = MemoryBudget(12 * gb, "given")
    with pytest.raises(ModelWontFitError):
        plan_load(ModelShape.of(info), context_tokens=8192, budget=one)
    layout = make_layout("tensor", 2, args, sizes, quant)
    reports = [RankReport(r, 1, 100 + r, 12 * gb, 0, "f", f"mac-{r}") for r in range(2)]
    plan = cluster_fit(info, args, layout, sizes, reports, 8192, False)
    assert plan.fits and plan.fit.budget_bytes == 24 * gb and "every rank's budget added up" in plan.fit.message
    # The same total, but one Mac too small for its half: refused, naming it.
    lopsided = [RankReport(0, 1, 100, 18 * gb, 0, "f", "mac-0"), RankReport(1, 1, 101, 6 * gb, 0, "f", "mac-1")]
    with pytest.raises(ModelWontFitError) as e:
        cluster_fit(info, args, layout, sizes, lopsided, 8192, False)
    assert str(e.value).startswith("rank 1 (mac-1, pid 101) cannot hold its part: Won't fit")
    assert cluster_fit(info, args, layout, sizes, lopsided, 8192, True).context_tokens == 8192  # --load-anyway
