"""Parity of our MLX Olmo-3 (``olmo3/model.py``) with transformers' ``Olmo3ForCausalLM``.

The reference logits in ``tests/golden/<case>/golden.npz`` were computed once by
``tests/golden/make_golden.py`` (transformers 5.24, torch CPU, eager attention, fp32,
``use_cache=False``) from the weights and ``config.json`` stored beside them. Two cases:

* ``mha``: 3 heads = 3 KV heads, config in transformers-5 form (``rope_parameters`` per layer type);
* ``gqa``: 4 heads over 2 KV heads, config in the legacy form of the released checkpoints
  (``rope_theta`` + ``rope_scaling`` with ``rope_type: "yarn"``).

Both have 4 layers (sliding, sliding, sliding, full), window 8, YaRN factor 8 over an original
32-token context on the full layer, and 40 input tokens, so every sliding layer's window is
exceeded several times over. The generator asserts that these logits move by > 1e-2 (in fact
1.8–7) if YaRN is dropped, put on every layer, the window is removed or made one longer, so a
port with any of those faults fails here. Tolerance: 1e-4 absolute on logits with std ~1.5
(transformers agrees with itself, cache vs. no cache, to ~1e-5; mlx-lm's port to ~1.3e-5).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm.models.cache import KVCache, RotatingKVCache

from olmo3.model.loader import load_model

GOLDEN_DIR = Path(__file__).parents[1] / "golden"
CASES = ("mha", "gqa")
TOL = 1e-4
SLIDING_WINDOW = 8  # as written by make_golden.py; checked against config.json below


@pytest.fixture(scope="module", params=CASES)
def case(request: pytest.FixtureRequest) -> dict:
    """A golden case: our model loaded from the folder, its config, and the reference arrays."""
    folder = GOLDEN_DIR / request.param
    model, config = load_model(folder)
    golden = np.load(folder / "golden.npz")
    return {
        "name": request.param,
        "model": model,
        "config": config,
        "input_ids": golden["input_ids"],
        "logits": golden["logits"],
    }


def run_schedule(model, input_ids: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Feed ``input_ids`` through one fresh cache in pieces of ``sizes`` tokens; concat the logits."""
    assert sum(sizes) == input_ids.shape[1], "a schedule must cover the whole sequence"
    cache = model.make_cache()
    outputs = []
    start = 0
    for size in sizes:
        logits = model(mx.array(input_ids[:, start : start + size]), cache=cache)
        mx.eval(logits)
        assert logits.shape == (1, size, model.args.vocab_size)
        outputs.append(np.array(logits.astype(mx.float32)))
        start += size
    return np.concatenate(outputs, axis=1)


def assert_matches(ours: np.ndarray, golden: np.ndarray, what: str) -> None:
    assert ours.shape == golden.shape, f"{what}: shape {ours.shape} != golden {golden.shape}"
    diff = np.abs(ours - golden)
    worst = float(diff.max())
    if worst > TOL:
        per_position = diff[0].max(axis=-1)
        first_bad = int(np.argmax(per_position > TOL))
        pytest.fail(
            f"{what}: max |Δlogit| = {worst:.3g} > {TOL} "
            f"(first bad position {first_bad}, worst position {int(per_position.argmax())}; "
            f"per-position max: {np.array2string(per_position, precision=1, max_line_width=200)})"
        )


def test_golden_files_are_the_advertised_shapes(case: dict) -> None:
    """Guards the fixture itself: one case per config format, both fp32 with a sequence > 3 windows."""
    config = case["config"]
    assert config["sliding_window"] == SLIDING_WINDOW
    assert config["layer_types"] == ["sliding_attention"] * 3 + ["full_attention"]
    if case["name"] == "mha":
        assert "rope_parameters" in config and "rope_scaling" not in config
        assert config["rope_parameters"]["full_attention"]["rope_type"] == "yarn"
        assert config["num_key_value_heads"] == config["num_attention_heads"]
    else:
        assert "rope_parameters" not in config
        assert config["rope_scaling"]["rope_type"] == "yarn" and "rope_theta" in config
        assert config["num_key_value_heads"] < config["num_attention_heads"]
    assert case["input_ids"].shape[1] >= 3 * SLIDING_WINDOW
    assert case["logits"].dtype == np.float32


def test_weights_load_in_float32(case: dict) -> None:
    model = case["model"]
    leaves = tree_flatten(model.parameters())
    assert leaves
    not_fp32 = [name for name, value in leaves if value.dtype != mx.float32]
    assert not not_fp32, f"{case['name']}: parameters not float32: {not_fp32}"


def test_make_cache_matches_layer_types(case: dict) -> None:
    """Full layers keep everything (KVCache); sliding layers get a ring buffer of exactly the window."""
    cache = case["model"].make_cache()
    layer_types = case["config"]["layer_types"]
    assert len(cache) == len(layer_types)
    for i, (layer_cache, layer_type) in enumerate(zip(cache, layer_types, strict=True)):
        if layer_type == "full_attention":
            assert type(layer_cache) is KVCache, f"layer {i}: {type(layer_cache).__name__}"
        else:
            assert type(layer_cache) is RotatingKVCache, f"layer {i}: {type(layer_cache).__name__}"
            assert layer_cache.max_size == SLIDING_WINDOW
            assert layer_cache.keep == 0


def test_full_forward_without_cache(case: dict) -> None:
    logits = case["model"](mx.array(case["input_ids"]))
    mx.eval(logits)
    assert logits.dtype == mx.float32
    assert_matches(np.array(logits), case["logits"], f"{case['name']}: full forward, no cache")


def test_full_forward_with_fresh_cache(case: dict) -> None:
    """One 40-token prefill into a fresh cache: the sliding mask must come from the cache path too."""
    ids = case["input_ids"]
    ours = run_schedule(case["model"], ids, [ids.shape[1]])
    assert_matches(ours, case["logits"], f"{case['name']}: one-shot prefill into make_cache()")


def test_token_by_token_decoding(case: dict) -> None:
    ids = case["input_ids"]
    ours = run_schedule(case["model"], ids, [1] * ids.shape[1])
    assert_matches(ours, case["logits"], f"{case['name']}: token-by-token decoding")


def test_chunked_prefill_smaller_than_window_then_decoding(case: dict) -> None:
    ids = case["input_ids"]
    ours = run_schedule(case["model"], ids, [5, 5, 5, 5] + [1] * (ids.shape[1] - 20))
    assert_matches(ours, case["logits"], f"{case['name']}: 5-token chunks then decoding")


def test_chunks_larger_than_window(case: dict) -> None:
    ids = case["input_ids"]
    ours = run_schedule(case["model"], ids, [13, 13, ids.shape[1] - 26])
    assert_matches(ours, case["logits"], f"{case['name']}: 13-token chunks")


def test_multi_turn_pattern_chunk_after_decoding(case: dict) -> None:
    """Prefill, decode, then another multi-token chunk into the wrapped ring buffer (a follow-up turn).

    This is the pattern of ml-explore/mlx-lm#503, where a multi-token update after single-token
    updates corrupted the rotating cache.
    """
    ids = case["input_ids"]
    sizes = [5, 5, 5, 5] + [1] * 6 + [7] + [1] * 3 + [4]
    ours = run_schedule(case["model"], ids, sizes)
    assert_matches(ours, case["logits"], f"{case['name']}: prefill, decode, chunk, decode, chunk")
