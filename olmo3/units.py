"""Sizes and durations as people read them: one formatter each for the CLI, the model store and the GUI."""

from __future__ import annotations

import math
import re

__all__ = ["format_bytes", "format_duration", "parse_bytes"]


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


_BINARY_SUFFIXES = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """``"8G"`` → 8 GiB; ``"512M"``, ``"1.5GiB"``, ``"8GB"`` and plain byte counts too (K/M/G/T are powers of 1024).

    Raises ``ValueError`` with a one-line message for anything else (a negative size, an unknown suffix).
    """
    m = _SIZE.match(str(text).strip())
    if m is None:
        raise ValueError(f"{text!r} is not a size: use bytes or a number with K, M, G or T (e.g. 8G)")
    value = int(float(m.group(1)) * _BINARY_SUFFIXES[m.group(2).upper()])
    if value <= 0:
        raise ValueError(f"{text!r} is not a size: it must be more than 0 bytes")
    return value
