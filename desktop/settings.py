"""User settings: a small typed JSON file in the config folder.

QSettings is used only for window geometry (see :mod:`desktop.app`); everything the user chooses lives here so it
is readable, diffable and survives Qt upgrades. Unknown or malformed values fall back to defaults field by field,
so one bad value never loses the rest of the user's settings.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = ""
THEMES = ("system", "light", "dark")


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters sent with each turn; ``None`` seed means random."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 50
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_tokens: int = 4096
    seed: int | None = None

    def to_engine(self) -> dict[str, Any]:
        """The dict passed as ``sampling=`` to the engine's job methods."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Sampling:
        base = cls()
        if not isinstance(data, dict):
            return base
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            default = getattr(base, f.name)
            try:
                if f.name == "seed":
                    values[f.name] = None if value in (None, "") else int(value)
                elif isinstance(default, int) and not isinstance(default, bool):
                    values[f.name] = int(value)
                else:
                    values[f.name] = float(value)
            except (TypeError, ValueError):
                log.warning("settings: ignoring sampling.%s=%r (not a number)", f.name, value)
        return replace(base, **values)


# Olmo-3 presets. Think: LM Studio's catalog values for Olmo-3 7B Think. Instruct: the model's generation_config
# (temperature/top_p when present), else a conservative default; see :func:`instruct_preset`.
THINK_PRESET = Sampling(temperature=0.6, top_p=0.95, top_k=50, min_p=0.0, repetition_penalty=1.0, max_tokens=8192)
INSTRUCT_FALLBACK = Sampling(temperature=0.6, top_p=0.95, top_k=0, min_p=0.0, repetition_penalty=1.0, max_tokens=4096)
PRECISE_PRESET = Sampling(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0, max_tokens=4096)


def instruct_preset(model_dir: str | Path | None) -> Sampling:
    """The Instruct preset: temperature/top_p/top_k from the model's ``generation_config.json`` when it has them."""
    if model_dir is None:
        return INSTRUCT_FALLBACK
    path = Path(model_dir) / "generation_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return INSTRUCT_FALLBACK
    values: dict[str, Any] = {}
    for key in ("temperature", "top_p", "top_k"):
        if isinstance(config.get(key), (int, float)) and not isinstance(config.get(key), bool):
            values[key] = config[key]
    return Sampling.from_dict({**INSTRUCT_FALLBACK.to_engine(), **values})


def presets(model_dir: str | Path | None = None) -> dict[str, Sampling]:
    """Named presets shown in the settings dialog."""
    return {"Olmo 3 Think": THINK_PRESET, "Olmo 3 Instruct": instruct_preset(model_dir), "Precise": PRECISE_PRESET}


@dataclass(frozen=True)
class Settings:
    """Everything the settings dialog edits. Frozen: change with :func:`dataclasses.replace`."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    sampling: Sampling = field(default_factory=Sampling)
    sampling_follows_model: bool = True  # pick the Think/Instruct preset when a model loads
    memory_budget_gb: float = 4.0  # RAM for conversations kept warm in memory; the rest spill to disk
    models_dir: str = ""  # empty: the default folder from AppPaths
    theme: str = "system"
    last_model: str = ""  # path of the model to load at start-up
    auto_load_last_model: bool = True

    @property
    def memory_budget_bytes(self) -> int:
        return int(self.memory_budget_gb * 1024**3)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Settings:
        base = cls()
        if not isinstance(data, dict):
            return base
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            default = getattr(base, f.name)
            if f.name == "sampling":
                values[f.name] = Sampling.from_dict(value)
            elif f.name == "theme":
                if value in THEMES:
                    values[f.name] = value
                else:
                    log.warning("settings: unknown theme %r, using %r", value, default)
            elif isinstance(default, bool):
                if isinstance(value, bool):
                    values[f.name] = value
            elif isinstance(default, float):
                try:
                    values[f.name] = max(0.0, float(value))
                except (TypeError, ValueError):
                    log.warning("settings: ignoring %s=%r (not a number)", f.name, value)
            elif isinstance(default, str):
                if isinstance(value, str):
                    values[f.name] = value
        return replace(base, **values)


def load_settings(path: Path) -> Settings:
    """Read settings; a missing file gives defaults, a corrupt one is kept aside as ``.bad`` and defaults are used."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except OSError as exc:
        log.error("settings: cannot read %s: %s", path, exc)
        return Settings()
    try:
        data = json.loads(text)
    except ValueError as exc:
        bad = path.with_suffix(".json.bad")
        log.error("settings: %s is not valid JSON (%s); keeping it as %s and using defaults", path, exc, bad)
        try:
            path.replace(bad)
        except OSError:
            pass
        return Settings()
    return Settings.from_dict(data)


def save_settings(path: Path, settings: Settings) -> None:
    """Write atomically (temp file + rename) so a crash mid-write never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(settings.to_dict(), fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
