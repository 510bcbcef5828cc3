"""Generate the reference-parity golden files for ``tests/test_parity.py``.

Why this exists: our Olmo-3 (``olmo3/model.py``) re-implements transformers'
``Olmo3ForCausalLM`` in MLX. The test suite runs on Python 3.12 without torch, so the
reference logits are computed once, here, with transformers + torch on the CPU, and the
small results are committed under ``tests/golden/<case>/``.

How to run it (Python 3.11, in a throw-away venv outside the repo; on 3.12 pip pulls a
multi-GB CUDA torch, the 3.11 index here has a CPU build)::

    /root/.pyenv/versions/3.11.7/bin/python3.11 -m venv /tmp/golden-venv
    /tmp/golden-venv/bin/pip install torch==2.13.0 transformers==5.24.0 safetensors numpy
    cd /work/main && /tmp/golden-venv/bin/python tests/golden/make_golden.py

It overwrites ``tests/golden/{mha,gqa}/{config.json,model.safetensors,golden.npz}``.
The output is deterministic for a given torch/transformers version (fixed seeds, one thread):
a re-run with torch 2.13.0 + transformers 5.24.0 rewrote byte-identical files.

Cases (fp32, random weights, 4 layers = sliding, sliding, sliding, full):

* ``mha``: hidden 48, 3 heads / 3 KV heads, head_dim 16. ``config.json`` is written by
  transformers 5's ``save_pretrained``: RoPE settings live in ``rope_parameters``, keyed by
  layer type (YaRN for ``full_attention``, default RoPE for ``sliding_attention``).
* ``gqa``: hidden 64, 4 heads / 2 KV heads, head_dim 16. ``config.json`` is in the legacy
  (transformers 4.57, i.e. the released ``allenai/Olmo-3-*``) form: top-level ``rope_theta``
  plus a flat ``rope_scaling`` dict with ``rope_type: "yarn"``. The reference model is built
  from exactly that file, so transformers' own legacy conversion (YaRN on full layers only)
  defines the expected logits.

Both: vocab 100, intermediate 64, sliding_window 8, max_position_embeddings 256,
rope_theta 500000, YaRN factor 8 with original_max_position_embeddings 32 (so scaling
changes the full layer), attention_factor 0.1*ln(8)+1, beta_fast 32, beta_slow 1,
rms_norm_eps 1e-6, untied embeddings. Weights are scaled up from transformers' init (std
0.02 gives near-uniform logits) so differences show; the script asserts that the logits
are sensitive to YaRN, to the sliding window and to the layer-type assignment of RoPE.

``golden.npz`` holds ``input_ids`` (int32 [1, 40]) and ``logits`` (float32 [1, 40, 100])
from one full eager forward with ``use_cache=False``. The script also checks that
transformers reproduces those logits token by token and in 5-token chunks with its cache.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file
from transformers import Olmo3Config, Olmo3ForCausalLM

GOLDEN_DIR = Path(__file__).resolve().parent
SEQ_LEN = 40
SLIDING_WINDOW = 8
VOCAB = 100
ROPE_THETA = 500000.0
YARN_FACTOR = 8.0
ATTENTION_FACTOR = 0.1 * math.log(YARN_FACTOR) + 1.0  # 1.2079441541679836, as in real configs
# transformers vs. itself (cache vs. no cache): fp32 rounding only, well under the 1e-4 parity bound.
SELF_TOL = 3e-5
# A golden case must move by far more than the parity tolerance (1e-4) under each fault.
MIN_FAULT_EFFECT = 1e-2

LAYER_TYPES = ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"]

YARN_SCALING = {
    "attention_factor": ATTENTION_FACTOR,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "factor": YARN_FACTOR,
    "original_max_position_embeddings": 32,
    "rope_type": "yarn",
}

CASES: dict[str, dict] = {
    "mha": {"hidden_size": 48, "num_attention_heads": 3, "num_key_value_heads": 3, "seed": 1234,
            "legacy_config": False},
    "gqa": {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "seed": 4321,
            "legacy_config": True},
}


def common_config_kwargs(case: dict) -> dict:
    """Config fields shared by both cases, as a real Olmo-3 config.json spells them."""
    return {
        "architectures": ["Olmo3ForCausalLM"],
        "vocab_size": VOCAB,
        "hidden_size": case["hidden_size"],
        "intermediate_size": 64,
        "num_hidden_layers": len(LAYER_TYPES),
        "num_attention_heads": case["num_attention_heads"],
        "num_key_value_heads": case["num_key_value_heads"],
        "hidden_act": "silu",
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "sliding_window": SLIDING_WINDOW,
        "layer_types": list(LAYER_TYPES),
        "tie_word_embeddings": False,
        "bos_token_id": None,
        "eos_token_id": VOCAB - 2,
        "pad_token_id": VOCAB - 1,
        "use_cache": False,
        "initializer_range": 0.02,
    }


def legacy_config_dict(case: dict) -> dict:
    """The pre-transformers-5 form of the released allenai/Olmo-3-* config.json."""
    cfg = {"model_type": "olmo3", **common_config_kwargs(case)}
    cfg["rope_theta"] = ROPE_THETA
    cfg["rope_scaling"] = dict(YARN_SCALING)
    cfg["torch_dtype"] = "float32"
    cfg["transformers_version"] = "4.57.1"
    return dict(sorted(cfg.items()))


def build_config(case: dict) -> Olmo3Config:
    """Config object for the case, built the way each config format is meant to be read."""
    if case["legacy_config"]:
        return Olmo3Config.from_dict(legacy_config_dict(case))
    full = {"rope_theta": ROPE_THETA, **YARN_SCALING}
    return Olmo3Config(
        **common_config_kwargs(case),
        rope_parameters={
            "full_attention": full,
            "sliding_attention": {"rope_type": "default", "rope_theta": ROPE_THETA},
        },
    )


def randomize_weights(model: Olmo3ForCausalLM, seed: int) -> None:
    """Overwrite every parameter with magnitudes that make logits far from uniform.

    Projections ~ N(0, 0.2), embeddings ~ N(0, 1), RMSNorm weights ~ N(1, 0.1);
    q_norm/k_norm get ~N(1.5, 0.2) so attention is sharp and positional errors show.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            shape = param.shape
            if name.endswith("norm.weight"):
                mean, std = (1.5, 0.2) if ("q_norm" in name or "k_norm" in name) else (1.0, 0.1)
                value = mean + std * torch.randn(shape, generator=gen)
            elif "embed_tokens" in name:
                value = torch.randn(shape, generator=gen)
            else:
                value = 0.2 * torch.randn(shape, generator=gen)
            param.copy_(value.to(torch.float32))


@torch.no_grad()
def full_logits(model: Olmo3ForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, use_cache=False).logits


@torch.no_grad()
def chunked_logits(model: Olmo3ForCausalLM, ids: torch.Tensor, chunk: int) -> torch.Tensor:
    """Logits from feeding ``ids`` in chunks through transformers' own cache."""
    cache = transformers.DynamicCache(config=model.config)
    parts = []
    for start in range(0, ids.shape[1], chunk):
        piece = ids[:, start : start + chunk]
        out = model(input_ids=piece, cache=cache, use_cache=True)
        cache = out.cache if getattr(out, "cache", None) is not None else cache
        parts.append(out.logits)
    return torch.cat(parts, dim=1)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def variant_logits(folder: Path, ids: torch.Tensor, mutate) -> torch.Tensor:
    """Logits of the saved model after changing its config (a fault a port might have)."""
    config = Olmo3Config.from_pretrained(folder)
    mutate(config)
    model = Olmo3ForCausalLM.from_pretrained(folder, config=config, attn_implementation="eager",
                                             dtype=torch.float32).eval()
    return full_logits(model, ids)


def yarn_everywhere(config: Olmo3Config) -> None:
    config.rope_parameters["sliding_attention"] = copy.deepcopy(config.rope_parameters["full_attention"])


def no_yarn(config: Olmo3Config) -> None:
    config.rope_parameters["full_attention"] = {"rope_type": "default", "rope_theta": ROPE_THETA}


def no_sliding(config: Olmo3Config) -> None:
    config.layer_types = ["full_attention"] * len(config.layer_types)


def window_off_by_one(config: Olmo3Config) -> None:
    config.sliding_window = SLIDING_WINDOW + 1


def make_case(name: str, case: dict) -> dict:
    out_dir = GOLDEN_DIR / name
    torch.manual_seed(case["seed"])
    model = Olmo3ForCausalLM(build_config(case)).to(torch.float32)
    randomize_weights(model, case["seed"])

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        model.save_pretrained(tmp_dir, safe_serialization=True)
        if case["legacy_config"]:
            (tmp_dir / "config.json").write_text(json.dumps(legacy_config_dict(case), indent=2) + "\n")
        written = json.loads((tmp_dir / "config.json").read_text())

        # The reference is whatever transformers makes of the files as written.
        ref = Olmo3ForCausalLM.from_pretrained(tmp_dir, attn_implementation="eager",
                                               dtype=torch.float32).eval()
        rope = ref.config.rope_parameters
        assert rope["full_attention"]["rope_type"] == "yarn", rope
        assert rope["sliding_attention"]["rope_type"] == "default", rope
        assert ref.config.layer_types == LAYER_TYPES
        for p in ref.parameters():
            assert p.dtype == torch.float32

        gen = torch.Generator().manual_seed(case["seed"] + 1)
        ids = torch.randint(0, VOCAB, (1, SEQ_LEN), generator=gen)
        logits = full_logits(ref, ids)

        checks = {
            "token_by_token_vs_full": max_diff(chunked_logits(ref, ids, 1), logits),
            "chunks_of_5_vs_full": max_diff(chunked_logits(ref, ids, 5), logits),
            "chunks_of_16_vs_full": max_diff(chunked_logits(ref, ids, 16), logits),
        }
        for key, value in checks.items():
            assert value <= SELF_TOL, f"{name}: transformers disagrees with itself ({key} = {value:.3g})"

        faults = {
            "no_yarn": max_diff(variant_logits(tmp_dir, ids, no_yarn), logits),
            "yarn_on_all_layers": max_diff(variant_logits(tmp_dir, ids, yarn_everywhere), logits),
            "no_sliding_window": max_diff(variant_logits(tmp_dir, ids, no_sliding), logits),
            "window_plus_one": max_diff(variant_logits(tmp_dir, ids, window_off_by_one), logits),
        }
        for key, value in faults.items():
            assert value >= MIN_FAULT_EFFECT, f"{name}: golden logits barely react to {key} ({value:.3g})"

        # Logits must be far from uniform, else the comparison says little.
        probs = torch.softmax(logits[0], dim=-1)
        entropy = float(-(probs * probs.clamp_min(1e-30).log()).sum(-1).mean())

        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        shutil.copyfile(tmp_dir / "config.json", out_dir / "config.json")
        shutil.copyfile(tmp_dir / "model.safetensors", out_dir / "model.safetensors")

    tensors = load_file(str(out_dir / "model.safetensors"))
    assert all(t.dtype == np.float32 for t in tensors.values())
    np.savez_compressed(
        out_dir / "golden.npz",
        input_ids=ids.numpy().astype(np.int32),
        logits=logits.numpy().astype(np.float32),
    )
    return {
        "config_format": "legacy rope_theta+rope_scaling" if case["legacy_config"] else "transformers-5 rope_parameters",
        "config_keys": sorted(written),
        "n_weights": len(tensors),
        "logit_std": float(logits.std()),
        "mean_entropy_nats": entropy,
        "uniform_entropy_nats": math.log(VOCAB),
        "self_checks": checks,
        "fault_effects": faults,
    }


def main() -> int:
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}")
    torch.set_num_threads(1)  # deterministic reductions
    for name, case in CASES.items():
        report = make_case(name, case)
        print(f"[{name}]")
        for key, value in report.items():
            print(f"  {key}: {value}")
    total = sum(p.stat().st_size for p in GOLDEN_DIR.rglob("*") if p.is_file() and p.parent != GOLDEN_DIR)
    print(f"golden data: {total / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
