"""Small text formatters shared by widgets and Qt-free helpers."""

from __future__ import annotations

from typing import Any


def short_count(n: int) -> str:
    """1,234 → "1,234"; 12,345 → "12.3k"; 131,072 → "131k"."""
    if n >= 10_000:
        return f"{n / 1000:.0f}k" if n >= 100_000 else f"{n / 1000:.1f}k"
    return f"{n:,}"


def format_stats(stats: Any) -> str:
    """ "0.08 s to first token · 42 tok/s · 180 tokens · 1,180 reused" from a TurnStats (or a dict with its fields)."""
    get = (lambda k: stats.get(k)) if isinstance(stats, dict) else (lambda k: getattr(stats, k, None))
    parts = []
    ttft = get("ttft_s")
    if isinstance(ttft, (int, float)) and ttft > 0:
        parts.append(f"{ttft:.2f} s to first token")
    tps = get("tokens_per_s")
    if isinstance(tps, (int, float)) and tps > 0:
        parts.append(f"{tps:.1f} tok/s")
    gen = get("generated_tokens")
    reasoning = get("reasoning_tokens")
    if isinstance(gen, int):
        parts.append(
            f"{gen:,} tokens" + (f" ({reasoning:,} reasoning)" if isinstance(reasoning, int) and reasoning else "")
        )
    cached = get("cached_tokens")
    if isinstance(cached, int) and cached > 0:
        parts.append(f"{cached:,} reused from cache")
    return " · ".join(parts)


def ellipsize(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, with "…" where it was cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
