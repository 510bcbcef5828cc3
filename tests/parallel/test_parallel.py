"""Tensor and pipeline parallel Olmo-3 in real ``mlx.launch -n 2 --backend ring`` groups on loopback.

Each group runs ``worker.py``: the same conversations as the single-machine reference (``single_run``), through the
engine, with chunked prefill past the sliding window, follow-ups that reuse the caches, regenerate, edit, spill and
restore, 8-bit KV. Everything must match: every token, what was reused, how the cache was found, and the
first-token logits to 1e-4 (fp32). Every rank must have read exactly its share of the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import BACKEND, launch, worker

pytestmark = pytest.mark.slow  # mlx.launch groups of real processes: about a minute (.ci/run runs them)


def check_same(single: list[dict], parallel: list[dict]) -> None:
    assert len(parallel) == len(single) == 2
    for ref, got in zip(single, parallel, strict=True):
        assert [t["what"] for t in got["turns"]] == [t["what"] for t in ref["turns"]]
        for a, b in zip(ref["turns"], got["turns"], strict=True):
            assert b["tokens"] == a["tokens"], b["what"]
            assert b["text"] == a["text"], b["what"]
            assert (b["cached_tokens"], b["reconcile"], b["prompt_tokens"]) == (
                a["cached_tokens"],
                a["reconcile"],
                a["prompt_tokens"],
            ), b["what"]
        by = {t["what"]: t for t in got["turns"]}
        assert by["first"]["prompt_tokens"] > 16 * 4  # prefilled in chunks of 8, far past the window of 16
        assert by["follow-up"]["cached_tokens"] > 0 and by["follow-up"]["reconcile"].startswith("append")
        assert by["regenerate"]["reconcile"] == "snapshot"
        assert by["after restore"]["reconcile"] == "restored" and by["after restore"]["cached_tokens"] > 0
        assert ref["spilled"] == ["conv.safetensors"] and ref["after_delete"] == []
        tag = got["spilled"][0].split(".")[1][:-1]  # tensor2-r / pipeline2-r
        assert got["spilled"] == [f"conv.{tag}0.safetensors", f"conv.{tag}1.safetensors"]  # a part per rank
        assert got["after_delete"] == []  # deleting the conversation deletes every rank's part
        assert len(got["logits"]) == len(ref["logits"]) > 0
        assert max(abs(x - y) for x, y in zip(ref["logits"], got["logits"], strict=True)) <= 1e-4


def check_loads(out: Path, layout_prefix: str) -> None:
    for rank in (0, 1):
        loads = json.loads(Path(f"{out}.rank{rank}.json").read_text())
        assert len(loads) == 2
        for load in loads:
            assert load["layout"].startswith(layout_prefix)
            assert load["bytes_read"] == load["expected"] == load["parameters"]  # its slices, nothing else
            assert load["bytes_read"] < 0.7 * load["total"]
            if load["peak"] is not None:  # what MLX held while loading: the share, never the whole model
                assert load["peak"] < 1.1 * load["expected"] + (64 << 10)


def run_group(mode: str, tmp_path: Path, models: dict[str, Path], env: list[str] = ()) -> tuple[list[dict], Path]:
    out = tmp_path / f"{mode}.json"
    r = launch(2, worker(mode, out, tmp_path / "kv", [models["gqa"], models["mha"]]), env=env)
    assert r.returncode == 0 and out.exists(), r.stdout + r.stderr
    assert not r.stdout.strip(), r.stdout  # the worker prints nothing; no rank prints stray lines
    # Every rank spilled its own part under its own name, and restoring consumed them all.
    assert not list((tmp_path / "kv").rglob("*.tmp.safetensors"))
    return json.loads(out.read_text()), out


def test_tensor_parallel_matches_one_machine(tmp_path, parallel_models, single_run):
    got, out = run_group("tensor", tmp_path, parallel_models)
    check_same(single_run, got)
    check_loads(out, "tensor/2")


def test_tensor_parallel_with_qk_norm_by_all_sum_matches_one_machine(tmp_path, parallel_models, single_run):
    """The memory-lean q/k-norm (projections split by heads, partial sums of squares added up by all_sum)."""
    got, out = run_group("tensor", tmp_path, parallel_models, env=["OLMO3_TP_QK_NORM=collective"])
    check_same(single_run, got)
    check_loads(out, "tensor/2/qk-collective")


def test_pipeline_parallel_matches_one_machine(tmp_path, parallel_models, single_run):
    got, out = run_group("pipeline", tmp_path, parallel_models)
    check_same(single_run, got)
    check_loads(out, "pipeline/2/")
    handovers = {load["handover"] for load in json.loads(Path(f"{out}.rank1.json").read_text())}
    assert handovers == ({"sendrecv"} if BACKEND == "ring" else {"collective"})  # found by trying: CUDA has none


def test_pipeline_with_all_sum_handover_matches_one_machine(tmp_path, parallel_models, single_run):
    """The hand-over MLX-CUDA needs (no send/recv there), forced on the ring backend."""
    got, out = run_group("pipeline", tmp_path, parallel_models, env=["OLMO3_PIPELINE_HANDOVER=collective"])
    check_same(single_run, got)
    assert {load["handover"] for load in json.loads(Path(f"{out}.rank1.json").read_text())} == {"collective"}


def test_rank_0_refuses_other_weights_or_a_missing_model_on_another_rank(tmp_path, parallel_models):
    out = tmp_path / "refusals.json"
    models = [parallel_models["gqa"], parallel_models["gqa"], parallel_models["gqa"]]
    cmd = [*worker("tensor", out, tmp_path / "kv", models), "--refusals", "--rank1-models"]
    cmd += [str(parallel_models["mha"]), str(tmp_path / "no-such-model"), str(parallel_models["gqa"])]
    r = launch(2, cmd)
    assert r.returncode == 0 and out.exists(), r.stdout + r.stderr
    other, missing, same = (x["refused"] for x in json.loads(out.read_text()))
    assert other.startswith("rank 1 (") and "other weights than rank 0 (fingerprints differ)" in other
    assert missing.startswith("rank 1 (") and "could not open the model" in missing
    assert "olmo3 (rank 1): " in r.stderr and "no-such-model" in r.stderr  # the follower says what it lacks
    assert same is None  # and the group goes on: the next load is accepted
