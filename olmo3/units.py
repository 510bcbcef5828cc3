"""Sizes and durations as people read them: one formatter each for the CLI, the model store and the GUI."""

from __future__ import annotations

import math

__all__ = ["format_bytes", "format_duration"]


def format_bytes(n: float | None) -> str:
    """Decimal units as Finder shows them: ``4.11 GB``, ``795 kB``; ``?`` for an unknown size."""
    if n is None:
        return "?"
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            if unit == "B":
                return f"{int(n)} B"
            return f"{n:.2f} {unit}" if abs(n) < 10 else f"{n:.1f} {unit}" if abs(n) < 100 else f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.0f} TB"  # pragma: no cover - the loop returns at "TB"


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m07s``, ``2h05m``; ``--`` when unknown or infinite."""
    if seconds is None or not math.isfinite(seconds):
        return "--"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
