"""Before a model loads: which context length it gets, and whether weights + KV cache + runtime fit the budget.

One answer for the engine (which refuses a load that won't fit unless forced), ``olmo3 generate``/``bench`` and the
GUI (the picker's fit badge, the settings' context length). MLX-free: the sizes come from ``config.json``
(:class:`olmo3.model.modelinfo.ModelInfo`, or a catalog entry's architecture), the verdict from
:func:`olmo3.hub.catalog.estimate_memory_fit` and the budget from :func:`olmo3.memory.memory_budget`.

**The context a model gets** is the one the user chose for it, else :func:`default_context`: the model's maximum,
or the longest context that still "fits" (weights + KV + runtime within 85 % of the budget), whichever is smaller,
rounded down to a multiple of 1,024 tokens (or, where nothing that long fits comfortably, the longest context that
fits at all, if that is at least :data:`MIN_CONTEXT`). A model too large to fit even with a short context gets
:data:`MIN_CONTEXT` tokens, and the check says it won't fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .memory import MemoryBudget, memory_budget

if TYPE_CHECKING:
    from .hub.catalog import MemoryFit
    from .model.modelinfo import ModelInfo

__all__ = [
    "MIN_CONTEXT",
    "LoadPlan",
    "ModelShape",
    "ModelWontFitError",
    "default_context",
    "plan_load",
    "tokens_within",
]

MIN_CONTEXT: Final = 1024  # a default context shorter than this is no use; the model "won't fit" instead
CONTEXT_STEP: Final = 1024


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs of a model (from a ``ModelInfo``, a listed model or a catalog entry)."""

    weight_bytes: int
    kv_bytes_per_token_full: int
    kv_bytes_per_token_sliding: int
    sliding_window: int
    max_context: int

    @classmethod
    def of(cls, info: ModelInfo) -> ModelShape:
        return cls(
            info.weight_bytes,
            info.kv_bytes_per_token_full,
            info.kv_bytes_per_token_sliding,
            info.sliding_window,
            info.max_position_embeddings,
        )

    @classmethod
    def of_any(cls, model: object) -> ModelShape | None:
        """From a ``ModelInfo``, a listed model (``olmo3.hub.LocalModel``: its ``info`` dict) or a catalog entry (its
        ``arch``); None when nothing says how large the model is (an incomplete download)."""
        if isinstance(model, ModelShape):
            return model
        arch = getattr(model, "arch", None)
        if arch is not None:
            return cls(
                int(getattr(model, "weight_bytes", 0)),
                arch.kv_bytes_per_token_full,
                arch.kv_bytes_per_token_sliding,
                arch.sliding_window,
                arch.max_position_embeddings,
            )
        info = getattr(model, "info", None)
        if isinstance(info, dict):
            try:
                return cls(
                    int(info["weight_bytes"]),
                    int(info["kv_bytes_per_token_full"]),
                    int(info["kv_bytes_per_token_sliding"]),
                    int(info["sliding_window"]),
                    int(info["max_position_embeddings"]),
                )
            except (KeyError, TypeError, ValueError):
                return None
        if hasattr(model, "kv_bytes_per_token_full") and hasattr(model, "max_position_embeddings"):
            return cls.of(model)  # type: ignore[arg-type]
        return None

    def fit(self, context_tokens: int, budget: MemoryBudget) -> MemoryFit:
        from .hub.catalog import estimate_memory_fit

        return estimate_memory_fit(
            weight_bytes=self.weight_bytes,
            kv_bytes_per_token_full=self.kv_bytes_per_token_full,
            kv_bytes_per_token_sliding=self.kv_bytes_per_token_sliding,
            sliding_window=self.sliding_window,
            context_tokens=context_tokens,
            budget=budget,
        )


def tokens_within(nbytes: int, per_token_full: int, per_token_sliding: int, sliding_window: int) -> int:
    """The longest conversation whose hybrid KV cache (``modelinfo.kv_cache_bytes``) fits in ``nbytes`` (0 if none)."""
    if nbytes <= 0:
        return 0
    within_window = nbytes // max(1, per_token_full + per_token_sliding)
    if within_window <= sliding_window:
        return int(within_window)
    if not per_token_full:  # only sliding layers: the cache stops growing at the window
        return 1 << 40
    return int((nbytes - per_token_sliding * sliding_window) // per_token_full)


def default_context(shape: ModelShape, budget: MemoryBudget | None = None) -> int:
    """The model's maximum context or the longest that fits comfortably, whichever is smaller (module docstring)."""
    from .hub.catalog import TIGHT_FRACTION

    budget = budget or memory_budget()
    base = shape.fit(0, budget).needed_bytes  # weights + runtime, no conversation yet
    for fraction in (TIGHT_FRACTION, 1.0):
        room = int(budget.bytes * fraction) - base
        n = min(
            shape.max_context,
            tokens_within(room, shape.kv_bytes_per_token_full, shape.kv_bytes_per_token_sliding, shape.sliding_window),
        )
        if n >= min(MIN_CONTEXT, shape.max_context):
            return n if n == shape.max_context or n < 2 * CONTEXT_STEP else n - n % CONTEXT_STEP
    return min(MIN_CONTEXT, shape.max_context)


@dataclass(frozen=True)
class LoadPlan:
    """The context a load gets and the memory verdict at that context."""

    context_tokens: int
    max_context: int
    fit: MemoryFit

    @property
    def fits(self) -> bool:
        return self.fit.verdict != "wont_fit"


class ModelWontFitError(ValueError):
    """Loading was refused before reading any weights: the message has the numbers and what to do."""

    def __init__(self, plan: LoadPlan, path: str = ""):
        self.plan, self.path = plan, path
        super().__init__(plan.fit.message)


def plan_load(
    model: ModelInfo | ModelShape,
    *,
    context_tokens: int | None = None,
    budget: MemoryBudget | None = None,
    force: bool = False,
) -> LoadPlan:
    """The context (chosen, else :func:`default_context`; never above the model's maximum) and its verdict.

    Raises :class:`ModelWontFitError` when it won't fit, unless ``force``.
    """
    shape = model if isinstance(model, ModelShape) else ModelShape.of(model)
    budget = budget or memory_budget()
    if context_tokens is not None and context_tokens < 1:
        raise ValueError(f"context length {context_tokens}: must be at least 1 token")
    context = min(context_tokens or default_context(shape, budget), shape.max_context)
    plan = LoadPlan(context, shape.max_context, shape.fit(context, budget))
    if not plan.fits and not force:
        raise ModelWontFitError(plan, getattr(model, "path", ""))
    return plan
