"""``olmo3 bench decode|chat``: speed and memory targets measured as ratios inside one run.

Every number compares two things measured in the same process, interleaved, so machine noise and thermal
state cancel out. Results print as a table and as JSON.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import mlx.core as mx

from ..chat.events import TurnFinished
from ..fileio import read_json

# A model small enough for a laptop CPU yet large enough that compute, not Python, dominates.
BENCH_SIZE: dict[str, Any] = dict(
    hidden_size=384,
    num_hidden_layers=8,
    num_attention_heads=6,
    num_key_value_heads=2,
    intermediate_size=1024,
    sliding_window=128,
    max_position_embeddings=8192,
)


def _default_model(tmp: Path) -> Path:
    from ..model.tiny import make_tiny_model

    return make_tiny_model(tmp / "bench-model", weight_std=0.05, **BENCH_SIZE)


def _ban(ids: list[int]) -> Callable[[Any, Any], Any]:
    """Logits processor that forbids the stop tokens, so every run decodes the same number of tokens."""
    banned = mx.array(ids)

    def proc(tokens: Any, logits: Any) -> Any:
        return mx.put_along_axis(logits, banned[None], mx.array(-1e9, logits.dtype), axis=-1)

    return proc


def _mlx_lm_folder(folder: Path, tmp: Path) -> Path:
    """mlx-lm 0.32 reads only the legacy RoPE config form: give it a translated copy (weights linked)."""
    config = read_json(folder / "config.json")
    if "rope_parameters" not in config:
        return folder
    out = tmp / "mlx-lm-view"
    out.mkdir(exist_ok=True)
    for f in folder.iterdir():
        if f.name != "config.json" and not (out / f.name).exists():
            (out / f.name).symlink_to(f.resolve())
    rp = config.pop("rope_parameters")
    full = dict(rp.get("full_attention") or rp)
    config["rope_theta"] = full.pop("rope_theta", 500000.0)
    config["rope_scaling"] = full if full.get("rope_type", "default") != "default" else None
    (out / "config.json").write_text(json.dumps(config))
    return out


def _tps(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


def _decode_ours(model: Any, tok: Any, prompt: str, tokens: int) -> float:
    from ..chat.session import ChatSession

    s = ChatSession(model, tok, temperature=0.0, max_tokens=tokens)
    fin = [e for e in s.send(prompt, logits_processors=[_ban(list(tok.eos_token_ids))]) if isinstance(e, TurnFinished)]
    assert fin[0].stats.generated_tokens == tokens
    return fin[0].stats.tokens_per_s


def _decode_mlx_lm(model: Any, tok: Any, prompt_ids: list[int], tokens: int) -> float:
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_sampler

    times = []
    for _ in stream_generate(
        model,
        tok,
        mx.array(prompt_ids),
        max_tokens=tokens,
        sampler=make_sampler(0.0),
        logits_processors=[_ban(list(tok.eos_token_ids))],
    ):
        times.append(time.perf_counter())
    return _tps(times)


def bench_decode(
    model_path: str | Path | None = None,
    *,
    tokens: int = 128,
    rounds: int = 5,
    check: Callable[[Path], object] | None = None,
) -> dict[str, Any]:
    """Decode tok/s of ``olmo3`` (ChatSession) and of ``mlx_lm.stream_generate`` on the same weights.

    ``check(folder)`` runs before the weights load (the CLI's memory check: it raises when the model won't fit).
    """
    import mlx_lm

    from ..model.loader import load

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        folder = Path(model_path) if model_path else _default_model(tmp)
        if check is not None:
            check(folder)
        ours, tok = load(folder)
        theirs, their_tok = mlx_lm.load(str(_mlx_lm_folder(folder, tmp)))[:2]
        prompt = "Tell me a long story about a fox who learns to cache keys and values."
        prompt_ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        a, b = [], []
        _decode_ours(ours, tok, prompt, 8)  # warm-up both
        _decode_mlx_lm(theirs, their_tok, prompt_ids, 8)
        for r in range(rounds):  # alternate who goes first, so drift favours neither
            if r % 2:
                b.append(_decode_mlx_lm(theirs, their_tok, prompt_ids, tokens))
                a.append(_decode_ours(ours, tok, prompt, tokens))
            else:
                a.append(_decode_ours(ours, tok, prompt, tokens))
                b.append(_decode_mlx_lm(theirs, their_tok, prompt_ids, tokens))
        info = ours.info
    ma, mb = statistics.median(a), statistics.median(b)
    return {
        "benchmark": "decode",
        "model": str(model_path or "generated"),
        "params": info.param_count,
        "device": str(mx.default_device()),
        "tokens_per_run": tokens,
        "rounds": rounds,
        "olmo3_tok_s": round(ma, 2),
        "mlx_lm_tok_s": round(mb, 2),
        "olmo3_runs": [round(x, 2) for x in a],
        "mlx_lm_runs": [round(x, 2) for x in b],
        "ratios": {"decode_vs_mlx_lm": {"value": round(ma / mb, 3), "target": ">= 1.00"}},
    }


def _grow(session: Any, window: int, times: float, filler: str, processors: list[Any]) -> None:
    """Send long user turns (about a quarter window each) until the history reaches ``times * window``."""
    per = max(1, len(session.tokenizer.encode(filler, add_special_tokens=False)))
    text = filler * max(1, window // (4 * per))
    while len(session.tokens) < times * window:
        for _ in session.send(text, logits_processors=processors):
            pass


def _ttft(events: Iterable[object]) -> TurnFinished:
    fin = [e for e in events if isinstance(e, TurnFinished)]
    return fin[0]


def _scalar(a: Any) -> float:
    return float(cast(float, a.item()))


def kv_quality(model: Any, tok: Any, *, bits: int = 8, times: float = 4.5, extra_tokens: int = 64) -> dict[str, Any]:
    """What quantizing the full-attention layers' KV costs in accuracy, past ``times`` sliding windows.

    One conversation is grown past ``times * window`` tokens with the model's own KV precision; its cache is then
    copied with the full layers quantized to ``bits`` (as a session with ``kv_bits`` keeps it between turns). The
    same follow-up turn plus ``extra_tokens`` teacher-forced tokens go through both copies; reported: the largest
    |Δlogit| over those positions, the logits' spread for scale, how often the top token agrees, and the bytes.
    For scale too, ``max_abs_dlogit_reprefill``: the same history prefilled in one go at full precision (what
    chunking alone changes in this dtype).
    """
    from ..chat import kvcache
    from ..chat.session import ChatSession

    window = model.info.sliding_window
    s = ChatSession(model, tok, temperature=0.0, max_tokens=16)
    ban = [_ban(list(tok.eos_token_ids))]
    _grow(s, window, times, "Please explain, in detail, how a sliding window cache keeps memory bounded. ", ban)
    turn = "<|im_start|>user\nAnd what does that cost?<|im_end|>\n<|im_start|>assistant\n"
    forced = tok.encode(turn + "It costs little: " + "the cache stays bounded, " * 8, add_special_tokens=False)
    extra = mx.array(forced[: len(tok.encode(turn, add_special_tokens=False)) + extra_tokens])[None]
    assert s.cache is not None
    exact_cache = kvcache.restore(s.cache)
    quant_cache = kvcache.quantize_full_layers(kvcache.restore(s.cache), bits=bits)
    exact = model(extra, cache=exact_cache)[0].astype(mx.float32)
    quant = model(extra, cache=quant_cache)[0].astype(mx.float32)
    delta = mx.abs(exact - quant)
    oneshot = model.make_cache()
    model(mx.array(s.tokens)[None], cache=oneshot)
    floor = mx.abs(exact - model(extra, cache=oneshot)[0].astype(mx.float32))
    agree = mx.mean((mx.argmax(exact, axis=-1) == mx.argmax(quant, axis=-1)).astype(mx.float32))
    return {
        "bits": bits,
        "history_tokens": len(s.tokens),
        "history_windows": round(len(s.tokens) / window, 2),
        "positions": int(extra.shape[1]),
        "max_abs_dlogit": round(_scalar(mx.max(delta)), 5),
        "mean_abs_dlogit": round(_scalar(mx.mean(delta)), 6),
        "max_abs_dlogit_reprefill": round(_scalar(mx.max(floor)), 5),
        "logit_std": round(_scalar(mx.std(exact)), 4),
        "top1_agreement": round(_scalar(agree), 4),
        "kv_dtype": str(s.cache[-1].keys.dtype) if hasattr(s.cache[-1], "keys") else "",
        "kv_bytes_full_precision": kvcache.nbytes(exact_cache),
        "kv_bytes_quantized": kvcache.nbytes(quant_cache),
    }


def bench_chat(
    model_path: str | Path | None = None,
    *,
    rounds: int = 3,
    check: Callable[[Path], object] | None = None,
    kv_bits: int | None = None,
) -> dict[str, Any]:
    """Follow-up, regenerate/edit and restore-from-disk TTFT ratios; KV bytes against the hybrid bound.

    ``kv_bits``: the conversations keep their full-attention layers' KV quantized, and :func:`kv_quality` is
    reported too."""
    from mlx_lm.models.cache import load_prompt_cache, save_prompt_cache

    from ..chat.session import ChatSession
    from ..model.loader import load

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        folder = Path(model_path) if model_path else _default_model(tmp)
        if check is not None:
            check(folder)
        model, tok = load(folder)
        info = model.info
        W = info.sliding_window
        opts: dict[str, Any] = dict(temperature=0.0, max_tokens=16, kv_bits=kv_bits)
        ban = [_ban(list(tok.eos_token_ids))]
        filler = "Please explain, in detail, how a sliding window cache keeps memory bounded. "
        question = "What is the next step?"

        # Warm-up: the first prefill of each new shape compiles kernels (seconds on a GPU); keep that out.
        warm = ChatSession(model, tok, **opts)
        _grow(warm, W, 1.25, filler, ban)
        for turn in (warm.send(question, logits_processors=ban), warm.regenerate(logits_processors=ban)):
            _ttft(turn)
        del warm

        # Follow-up TTFT as one conversation grows past 1x, 2x and 4x the window (history 0 = a new chat).
        follow: dict[int, float] = {}
        follow[0] = statistics.median(
            _ttft(ChatSession(model, tok, **opts).send(question, logits_processors=ban)).stats.ttft_s
            for _ in range(rounds)
        )
        s = ChatSession(model, tok, **opts)
        for h in (1, 2, 4):
            _grow(s, W, h, filler, ban)
            follow[h] = statistics.median(
                _ttft(s.send(question, logits_processors=ban)).stats.ttft_s for _ in range(rounds)
            )

        # Regenerate and edit after the ring buffers wrapped, against a fresh turn at the same history.
        fresh, regen, edit = [], [], []
        for _ in range(rounds):
            fin = _ttft(s.send(question, logits_processors=ban))
            fresh.append(fin.stats.ttft_s)
            r = _ttft(s.regenerate(logits_processors=ban))
            regen.append(r.stats.ttft_s)
            n_users = sum(1 for m in s.messages if m.role == "user")
            e = _ttft(s.edit(n_users - 1, "And what comes after that?", logits_processors=ban))
            edit.append(e.stats.ttft_s)
        assert r.stats.reconcile == "snapshot" and e.stats.reconcile == "snapshot"

        # KV bytes of the conversation vs the hybrid bound.
        kv_ratio = s.kv_bytes() / info.kv_bytes(len(s.tokens))
        history_tokens = len(s.tokens)

        # Follow-up after restoring the cache from disk vs a full re-prefill of the same history.
        path = tmp / "conv.safetensors"
        restored, reprefill = [], []
        for _ in range(rounds):
            assert s.cache is not None
            save_prompt_cache(str(path), s.cache, {"n": str(len(s.tokens))})
            state = s.to_state()
            t0 = time.perf_counter()
            a = ChatSession(model, tok, **opts)
            a.load_state(state)
            a.cache = load_prompt_cache(str(path))
            a.restored_from_disk = True
            fa = _ttft(a.send(question, logits_processors=ban))
            restored.append(fa.stats.ttft_s + (time.perf_counter() - t0 - fa.stats.total_s))
            b = ChatSession(model, tok, **opts)
            b.load_state(state)
            fb = _ttft(b.send(question, logits_processors=ban))
            reprefill.append(fb.stats.ttft_s)
            # (Same replies are asserted in the fp32 tests; in bf16/4-bit the chunking changes rounding.)
            assert fa.stats.reconcile == "restored" and fb.stats.reconcile == "reprefill"

        decode = bench_decode(str(folder), tokens=64, rounds=rounds)
        quality = kv_quality(model, tok, bits=kv_bits) if kv_bits else None

    med = statistics.median
    r0 = follow[0]
    ratios = {
        "follow_up_ttft_1x_window": {"value": round(follow[1] / r0, 3), "target": "<= 1.3"},
        "follow_up_ttft_2x_window": {"value": round(follow[2] / r0, 3), "target": "<= 1.3"},
        "follow_up_ttft_4x_window": {"value": round(follow[4] / r0, 3), "target": "<= 1.3"},
        "regenerate_after_wrap_vs_fresh_turn": {"value": round(med(regen) / med(fresh), 3), "target": "<= 1.3"},
        "edit_after_wrap_vs_fresh_turn": {"value": round(med(edit) / med(fresh), 3), "target": "<= 1.3"},
        "restore_from_disk_vs_reprefill": {"value": round(med(restored) / med(reprefill), 3), "target": "<= 0.25"},
        "kv_bytes_vs_hybrid_bound": {"value": round(kv_ratio, 3), "target": "<= 1.05"},
        "decode_vs_mlx_lm": decode["ratios"]["decode_vs_mlx_lm"],
    }
    return {
        "benchmark": "chat",
        "model": str(model_path or "generated"),
        "device": str(mx.default_device()),
        "sliding_window": W,
        "history_tokens_at_4x": history_tokens,
        "ttft_s": {
            "history_0": round(r0, 4),
            "history_1x": round(follow[1], 4),
            "history_2x": round(follow[2], 4),
            "history_4x": round(follow[4], 4),
            "fresh_turn_4x": round(med(fresh), 4),
            "regenerate_4x": round(med(regen), 4),
            "edit_4x": round(med(edit), 4),
            "restore_from_disk": round(med(restored), 4),
            "full_reprefill": round(med(reprefill), 4),
        },
        "decode_tok_s": {"olmo3": decode["olmo3_tok_s"], "mlx_lm": decode["mlx_lm_tok_s"]},
        "kv_bits": kv_bits,
        **({"kv_quality": quality} if quality else {}),
        "ratios": ratios,
    }


def _passes(value: float, target: str) -> bool:
    op, num = target.split()
    return value <= float(num) if op == "<=" else value >= float(num)


def format_table(result: dict[str, Any]) -> str:
    lines = [f"olmo3 bench {result['benchmark']} · model {result['model']} · device {result['device']}"]
    for key in ("ttft_s", "decode_tok_s", "kv_quality"):
        if key in result:
            lines.append(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in result[key].items()))
    if "olmo3_tok_s" in result:
        lines.append(f"  decode tok/s: olmo3 {result['olmo3_tok_s']} · mlx_lm {result['mlx_lm_tok_s']}")
    lines.append(f"  {'ratio':<40} {'value':>8}  {'target':<8}  ok")
    for name, r in result["ratios"].items():
        ok = "yes" if _passes(r["value"], r["target"]) else "NO"
        lines.append(f"  {name:<40} {r['value']:>8}  {r['target']:<8}  {ok}")
    return "\n".join(lines)
