"""Sampling settings and Olmo-3's recommended presets (no MLX import: the GUI's settings use this too)."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..fileio import read_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """Per-turn generation settings. ``temperature == 0`` is greedy; ``seed=None`` draws a fresh seed each turn.

    Two of them shape a Think model's reasoning rather than the sampler: ``thinking_budget`` (None: no budget) is
    the most reasoning tokens before the engine closes the reasoning itself; ``max_tokens`` then limits the answer
    alone. ``keep_reasoning`` (None: what the model's chat template does) keeps or drops earlier replies'
    reasoning from the prompt.
    """

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 50
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int = 4096
    seed: int | None = None
    thinking_budget: int | None = None
    keep_reasoning: bool | None = None

    def merged(self, overrides: dict[str, Any] | None) -> Sampling:
        """These settings with ``overrides`` applied; unknown keys are an error (a typo must not pass)."""
        if not overrides:
            return self
        unknown = set(overrides) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown sampling settings: {', '.join(sorted(unknown))}")
        return replace(self, **overrides)

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name}={value}: must be a finite number")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature}: must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}: must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}: must be >= 0")
        if not 0 <= self.min_p < 1:
            raise ValueError(f"min_p={self.min_p}: must be in [0, 1)")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty}: must be > 0")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens={self.max_tokens}: must be >= 1")
        if self.seed is not None and not 0 <= self.seed < 2**64:
            raise ValueError(f"seed={self.seed}: must be from 0 to 2**64 - 1")
        budget = self.thinking_budget
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"thinking_budget={budget!r}: must be a whole number of tokens >= 1, or None (off)")
        if self.keep_reasoning is not None and not isinstance(self.keep_reasoning, bool):
            raise ValueError(f"keep_reasoning={self.keep_reasoning!r}: must be true, false or None (the template's)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, base: Sampling | None = None) -> Sampling:
        """Lenient parse of stored settings: a malformed value falls back to ``base``'s, field by field."""
        base = base or cls()
        if not isinstance(data, dict):
            return base
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            default = getattr(base, f.name)
            try:
                if f.name == "keep_reasoning":
                    if value is not None and not isinstance(value, bool):
                        raise ValueError(value)
                    parsed: Any = value
                elif isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
                    raise ValueError(value)  # numbers only: true is no number, NaN and Infinity are no settings
                elif f.name == "seed":
                    parsed = None if value in (None, "") else int(value)
                elif f.name == "thinking_budget":
                    parsed = parse_thinking_budget(value)
                elif isinstance(default, int) and not isinstance(default, bool):
                    parsed = int(value)
                    if not -(2**31) <= parsed < 2**31:
                        raise ValueError(value)
                else:
                    parsed = float(value)
                    if not math.isfinite(parsed):
                        raise ValueError(value)
                replace(base, **{f.name: parsed}).validate()  # in range, or the base's value stays
            except (TypeError, ValueError, OverflowError):
                log.warning("settings: ignoring sampling.%s=%r (not a valid value)", f.name, value)
                continue
            values[f.name] = parsed
        return replace(base, **values)


# Thinking budgets offered by the settings (any whole number of tokens works too).
THINKING_BUDGETS: dict[str, int | None] = {"Off": None, "1K": 1024, "4K": 4096, "16K": 16384}


def parse_thinking_budget(value: Any) -> int | None:
    """``None``/``"off"``/``""`` → None; ``4096``, ``"4096"``, ``"4K"``, ``"4k"`` → 4096. Raises ValueError."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "off", "none")):
        return None
    if isinstance(value, bool):
        raise ValueError(f"thinking budget {value!r}: expected a number of tokens or 'off'")
    if isinstance(value, int):
        n = value
    else:
        text = str(value).strip().lower().replace(",", "").replace("_", "")
        scale = 1024 if text.endswith("k") else 1
        try:
            n = int(text.removesuffix("k")) * scale
        except ValueError:
            raise ValueError(
                f"thinking budget {value!r}: expected a number of tokens (e.g. 4096 or 4K) or 'off'"
            ) from None
    if n < 1:
        raise ValueError(f"thinking budget {value!r}: must be at least 1 token (or 'off')")
    return n


def format_thinking_budget(budget: int | None) -> str:
    """None → "Off"; 4096 → "4K"; 3000 → "3,000 tokens"."""
    if budget is None:
        return "Off"
    return f"{budget // 1024}K" if budget % 1024 == 0 else f"{budget:,} tokens"


# Olmo-3 Think: the values Ai2 and LM Studio recommend. Instruct: the model's generation_config.json where it
# has them (temperature/top_p/top_k), else these. "Precise": greedy, for reproducible answers.
THINK_DEFAULTS = Sampling(temperature=0.6, top_p=0.95, top_k=50, max_tokens=8192)
INSTRUCT_DEFAULTS = Sampling(temperature=0.6, top_p=0.95, top_k=0, max_tokens=4096)
PRECISE = Sampling(temperature=0.0, top_p=1.0, top_k=0, max_tokens=4096)


def recommended(model_dir: str | Path | None, *, think: bool) -> Sampling:
    """The recommended sampling for a model folder: the Think preset, or Instruct from its generation config."""
    if think:
        return THINK_DEFAULTS
    if not model_dir:
        return INSTRUCT_DEFAULTS
    try:
        config = read_json(Path(model_dir) / "generation_config.json")  # bounded: the folder comes from outside
    except (OSError, ValueError):
        return INSTRUCT_DEFAULTS
    if not isinstance(config, dict):
        return INSTRUCT_DEFAULTS
    values = {
        k: config[k]
        for k in ("temperature", "top_p", "top_k")
        if isinstance(config.get(k), (int, float)) and not isinstance(config.get(k), bool)
    }
    return Sampling.from_dict(values, base=INSTRUCT_DEFAULTS)
