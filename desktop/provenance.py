"""What a reply was made with, in words: the Info popover's rows, the "Reasoning stopped" note, the context bar's
extra lines, and the settings that reproduce a reply (Qt-free, testable without widgets).

A reply's provenance is stored in its message row as JSON (:class:`olmo3.chat.transcript.Provenance` plus the GUI's
own keys: ``model`` display name, ``thought_s``). Older replies have only those GUI keys: they get no rows and
cannot be reproduced.
"""

from __future__ import annotations

from typing import Any

from olmo3.chat.sampling import format_thinking_budget
from olmo3.chat.transcript import Provenance
from olmo3.units import format_bytes

RECONCILE_WORDS = {
    "fresh": "first turn: the whole prompt was read",
    "append": "follow-up: only the new message was read",
    "append_turn_end": "follow-up after a cut reply: its end marker and the new message were read",
    "trim": "rewound the cache a few tokens, then read the rest",
    "snapshot": "restored a snapshot, then read the rest",
    "restored": "cache restored from disk",
    "reprefill": "no usable cache: the whole conversation was read again",
}


def parse(data: Any) -> Provenance | None:
    return Provenance.from_dict(data)


def _sampling_line(p: Provenance) -> str:
    s = p.sampling
    if s.temperature == 0:
        text = "greedy (temperature 0)"
    else:
        text = f"temperature {s.temperature:g} · top P {s.top_p:g} · top K {s.top_k or 'off'}"
        if s.min_p:
            text += f" · min P {s.min_p:g}"
    if s.repetition_penalty != 1.0:
        text += f" · repetition penalty {s.repetition_penalty:g}"
    return text


def rows(data: Any, stats: Any = None) -> list[tuple[str, str]]:
    """``(label, value)`` rows for the Info popover; empty when ``data`` holds no provenance."""
    p = parse(data)
    if p is None:
        return []
    model = (data.get("model") if isinstance(data, dict) else None) or p.model_name
    origin = p.model_repo_id or "a local folder"
    if p.model_revision:
        origin += f" @ {p.model_revision[:12]}"
    quant = p.quantization.get("bits") if p.quantization else None
    out = [
        ("Model", f"{model} · {quant}-bit" if quant and f"{quant}-bit" not in str(model) else str(model)),
        ("Source", origin),
        ("Weights", p.model_fingerprint or "unknown"),
        ("Sampling", _sampling_line(p)),
        ("Seed", f"{p.seed} (random)" if p.seed_was_random else str(p.seed)),
        ("Max tokens", f"{p.sampling.max_tokens:,}" + (" for the answer" if p.thinking_budget else "")),
    ]
    stats = stats if isinstance(stats, dict) else {}
    reasoning = stats.get("reasoning_tokens")
    if p.thinking_budget is not None or reasoning:
        budget = format_thinking_budget(p.thinking_budget)
        used = f" · {reasoning:,} reasoning tokens" if isinstance(reasoning, int) and reasoning else ""
        out.append(("Thinking budget", budget + used))
        out.append(("Earlier reasoning", "kept in context" if p.keep_reasoning else "dropped from context"))
    out += [
        ("KV cache", f"{p.kv_bits}-bit full-attention layers" if p.kv_bits else "model precision"),
        ("Context", f"{p.context_limit:,} tokens"),
        ("Cache", RECONCILE_WORDS.get(p.reconcile, p.reconcile)),
        ("Template", p.template_hash),
        ("Engine", f"Olmo Desktop {p.engine_version}"),
    ]
    return out


def mismatch(data: Any, model_info: Any, kv_bits: int | None = None) -> str | None:
    """Why reproducing this reply now may not give the same tokens (another model or 8-bit KV setting), or None."""
    p = parse(data)
    if p is None or model_info is None:
        return None
    fingerprint = str(getattr(model_info, "fingerprint", "") or "")
    if fingerprint and p.model_fingerprint and fingerprint != p.model_fingerprint:
        return (
            f"The loaded model's weights ({fingerprint}) differ from the ones this reply was made with "
            f"({p.model_fingerprint}): reproducing gives a different reply."
        )
    if (kv_bits or None) != (p.kv_bits or None) and int(getattr(model_info, "head_dim", 0) or 0) % 32 == 0:
        now = f"{kv_bits}-bit" if kv_bits else "off"
        was = f"{p.kv_bits}-bit" if p.kv_bits else "off"
        return f"8-bit KV is {now} now but was {was} for this reply: the reply may differ slightly."
    return None


def reproduce_settings(data: Any) -> dict[str, Any] | None:
    """The sampling settings that regenerate this reply exactly (None: it has no provenance)."""
    p = parse(data)
    return p.reproduce_sampling() if p is not None else None


def reasoning_note(stats: Any) -> str | None:
    """ "Reasoning stopped at 4,096 tokens" when the thinking budget closed the reasoning."""
    if not isinstance(stats, dict) or not stats.get("reasoning_stopped"):
        return None
    n = stats.get("reasoning_tokens")
    return f"Reasoning stopped at {n:,} tokens" if isinstance(n, int) else "Reasoning stopped at the thinking budget"


def context_lines(stats: Any, cache_bytes: int, model_info: Any, kv_bits: int | None) -> list[str]:
    """Extra lines for the context bar's tooltip: context freed by dropping earlier reasoning, KV memory saved."""
    out = []
    saved = stats.get("reasoning_dropped_tokens") if isinstance(stats, dict) else None
    if isinstance(saved, int) and saved > 0:
        out.append(f"Earlier reasoning is left out of the context: {saved:,} tokens saved.")
    used = stats.get("context_used") if isinstance(stats, dict) else None
    if kv_bits and cache_bytes > 0 and model_info is not None and isinstance(used, int) and used > 0:
        full = int(model_info.kv_bytes(used))
        if full > cache_bytes:
            out.append(
                f"{kv_bits}-bit KV cache: {format_bytes(cache_bytes)} instead of {format_bytes(full)} "
                f"({format_bytes(full - cache_bytes)} saved)."
            )
    return out
