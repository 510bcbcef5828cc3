"""How much memory models may use on this machine: one reading of physical RAM and one budget policy.

Everyone asks here: the model picker and ``olmo3 models catalog`` (will a model fit?) and the engine (how much KV
cache may stay in memory, how long may one conversation grow?).

**The budget.** On Apple silicon the best number is Metal's recommended working set
(``mx.device_info()["max_recommended_working_set_size"]``): what macOS lets the GPU keep resident. Only the
engine thread may run MLX, so this module never imports it. The engine reads the working set on its own thread
after loading a model and hands it in with :func:`set_working_set`; from then on :func:`memory_budget` returns
it. Before that (no model loaded yet in this process, the CLI, CI) or where Metal reports nothing (Linux), the
budget is 75 % of physical RAM, which is close to what macOS recommends on most Macs.

**The policies.** From the one budget ``B`` and the loaded weights ``W``:

* :func:`memory_budget` (a :class:`MemoryBudget`): ``B``, what weights + KV cache + runtime must fit in (the
  catalog's "fits / tight / won't fit");
* :func:`default_memory_budget`: ``(B - W) / 2`` of KV cache kept warm across all conversations (the engine's
  pool; least recently used conversations are spilled to disk beyond it);
* :func:`conversation_memory_limit`: ``(B - W) * 3/4``, the most KV one conversation may grow to.

Both engine policies are at least 256 MiB, so a tiny machine still runs short chats.

**A cap.** ``olmo3 … --memory-limit 8G`` (and tests) lower the budget: :meth:`MemoryBudget.capped` keeps the
smaller of the two and says where the number came from.

**When memory runs out anyway** (another app grew, a forced load), MLX raises errors that name allocators and
buffers. :func:`describe_error` turns those into one sentence that says what to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Final, Literal

from .units import format_bytes

__all__ = [
    "MIN_KV_BYTES",
    "OUT_OF_MEMORY",
    "RAM_FRACTION",
    "MemoryBudget",
    "conversation_memory_limit",
    "default_memory_budget",
    "describe_error",
    "is_out_of_memory",
    "memory_budget",
    "physical_memory_bytes",
    "set_working_set",
    "working_set_bytes",
]

RAM_FRACTION: Final = 0.75  # the budget where Metal's working set is not known
FALLBACK_RAM_BYTES: Final = 8 * 1024**3  # if even the RAM size cannot be read
MIN_KV_BYTES: Final = 256 << 20
POOL_FRACTION: Final = 0.5  # of what the weights leave: KV kept warm across conversations
CONVERSATION_FRACTION: Final = 0.75  # of what the weights leave: the most one conversation may use

BudgetSource = Literal["mlx_working_set", "ram_fraction", "given", "limit", "cluster"]

_working_set: int | None = None
_working_set_lock = threading.Lock()


def physical_memory_bytes() -> int | None:
    """Installed RAM in bytes (``sysconf``; ``sysctl hw.memsize`` on macOS as a fallback), None if unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    if sys.platform == "darwin":  # pragma: no cover - sysconf works on macOS; belt and braces
        try:
            out = subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, check=False).stdout
            return int(out)
        except (OSError, ValueError):
            return None
    return None


def set_working_set(nbytes: int | None) -> None:
    """Record Metal's recommended working set (bytes); None or 0 forgets it. Called by the engine thread.

    Thread-safe: the engine writes it once per model load, any thread reads it through :func:`memory_budget`.
    """
    global _working_set
    with _working_set_lock:
        _working_set = int(nbytes) if nbytes and nbytes > 0 else None


def working_set_bytes() -> int | None:
    """The working set the engine recorded, or None before any model was loaded here (or without Metal)."""
    with _working_set_lock:
        return _working_set


@dataclass(frozen=True)
class MemoryBudget:
    """How much memory models may use here, and where the number came from (for messages)."""

    bytes: int
    source: BudgetSource
    physical_bytes: int | None = None

    @classmethod
    def from_working_set(cls, working_set: int, physical_bytes: int | None = None) -> MemoryBudget:
        return cls(int(working_set), "mlx_working_set", physical_bytes)

    @classmethod
    def from_ram(cls, physical_bytes: int | None) -> MemoryBudget:
        return cls(int((physical_bytes or FALLBACK_RAM_BYTES) * RAM_FRACTION), "ram_fraction", physical_bytes)

    def capped(self, limit: int | None) -> MemoryBudget:
        """This budget, or ``limit`` where that is lower (a user's ``--memory-limit``)."""
        if limit is None or limit >= self.bytes:
            return self
        return MemoryBudget(max(0, int(limit)), "limit", self.physical_bytes)

    def describe(self) -> str:
        if self.source == "limit":
            return f"{format_bytes(self.bytes)} (your memory limit)"
        if self.source == "mlx_working_set":
            return f"{format_bytes(self.bytes)} (the GPU working set macOS recommends)"
        if self.source == "cluster":
            return f"{format_bytes(self.bytes)} (every rank's budget added up)"
        if self.source == "ram_fraction" and self.physical_bytes:
            return f"{format_bytes(self.bytes)} ({RAM_FRACTION:.0%} of {format_bytes(self.physical_bytes)} RAM)"
        return format_bytes(self.bytes)


def memory_budget(limit: int | None = None) -> MemoryBudget:
    """Metal's recommended working set once the engine has reported it, else 75 % of physical RAM; at most ``limit``."""
    physical = physical_memory_bytes()
    ws = working_set_bytes()
    if ws is not None:
        return MemoryBudget.from_working_set(ws, physical).capped(limit)
    return MemoryBudget.from_ram(physical).capped(limit)


def default_memory_budget(weight_bytes: int, budget: MemoryBudget | None = None) -> int:
    """Bytes of KV cache to keep in memory across conversations: half of what the budget leaves after the weights."""
    total = (budget or memory_budget()).bytes
    return max(MIN_KV_BYTES, int((total - weight_bytes) * POOL_FRACTION))


def conversation_memory_limit(weight_bytes: int, budget: MemoryBudget | None = None) -> int:
    """The most KV one conversation may grow to: three quarters of what the budget leaves after the weights.

    The pool budget decides what stays warm (the rest is spilled to disk); this decides what can run at all.
    """
    total = (budget or memory_budget()).bytes
    return max(MIN_KV_BYTES, int((total - weight_bytes) * CONVERSATION_FRACTION))


OUT_OF_MEMORY: Final = (
    "The model ran out of memory: choose a smaller quantization or a shorter context, or close other conversations."
)
# What MLX, Metal and the C++ runtime say when an allocation fails (lower case).
_OOM_MARKERS: Final = (
    "out of memory",
    "outofmemory",
    "insufficient memory",
    "bad_alloc",
    "failed to allocate",
    "unable to allocate",
    "attempting to allocate",
    "maximum allowed buffer size",
)


def is_out_of_memory(error: BaseException | str) -> bool:
    """Whether an error (or its message) says an allocation failed."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return any(marker in text for marker in _OOM_MARKERS)


def describe_error(error: BaseException | str) -> str:
    """An error as a person should read it: out-of-memory errors become :data:`OUT_OF_MEMORY`, others stay."""
    if is_out_of_memory(error):
        return OUT_OF_MEMORY
    if isinstance(error, BaseException):
        return str(error) or type(error).__name__
    return error
