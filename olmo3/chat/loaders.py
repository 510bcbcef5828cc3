"""How the engine gets a model (:class:`ModelLoader`): the memory verdict first, then the model and tokenizer.

:class:`LocalLoader` loads this machine's folder against this machine's budget. ``olmo3.parallel.cluster``'s
``ClusterLoader`` gives rank 0 of a parallel group its part of the model (the budgets of every rank added up).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..fit import LoadPlan
    from ..memory import MemoryBudget

__all__ = ["LocalLoader", "ModelLoader"]


class ModelLoader(Protocol):
    """How the engine gets a model: the memory verdict first (raises ``ModelWontFitError``), then the model."""

    def plan(self, path: Path, *, context_tokens: int | None, budget: MemoryBudget, force: bool) -> LoadPlan: ...

    def load(self, path: Path) -> tuple[Any, Any]: ...


class LocalLoader:
    """This machine: the folder's weights, checked against this machine's budget."""

    def plan(self, path: Path, *, context_tokens: int | None, budget: MemoryBudget, force: bool) -> LoadPlan:
        from ..fit import plan_load
        from ..model.modelinfo import inspect_model_dir

        return plan_load(inspect_model_dir(path), context_tokens=context_tokens, budget=budget, force=force)

    def load(self, path: Path) -> tuple[Any, Any]:
        from ..model.loader import load

        return load(path)
