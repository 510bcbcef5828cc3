"""User settings: a small typed JSON file in the config folder.

QSettings is used only for window geometry (see :mod:`desktop.app`); everything the user chooses lives here so it
is readable, diffable and survives Qt upgrades. Unknown or malformed values fall back to defaults field by field,
so one bad value never loses the rest of the user's settings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from olmo3.chat.sampling import INSTRUCT_DEFAULTS, PRECISE, THINK_DEFAULTS, Sampling, recommended
from olmo3.fileio import read_json, write_atomic

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = ""
SETTINGS_MAX_BYTES = 4 * 1024**2  # a few long system prompts; a larger file is not ours
MAX_MEMORY_BUDGET_GB = 1024.0
THEMES = ("system", "light", "dark")


# Olmo-3 presets live in olmo3.chat.sampling (the engine uses the same class and values).
THINK_PRESET = THINK_DEFAULTS
INSTRUCT_FALLBACK = INSTRUCT_DEFAULTS
PRECISE_PRESET = PRECISE


def instruct_preset(model_dir: str | Path | None) -> Sampling:
    """The Instruct preset: temperature/top_p/top_k from the model's ``generation_config.json`` when it has them."""
    return recommended(model_dir, think=False)


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
    kv_8bit: bool = False  # keep the full-attention layers' KV cache in 8 bits (about half their memory)
    models_dir: str = ""  # empty: the default folder from AppPaths
    theme: str = "system"
    last_model: str = ""  # path of the model to load at start-up
    auto_load_last_model: bool = True
    # The context length chosen per model (its folder path); a model not listed gets olmo3.fit.default_context.
    model_context: dict[str, int] = field(default_factory=dict)
    # Tools (Settings → Tools): whether models may call the tools of the MCP servers in mcp.json, at most how many
    # rounds of calls one reply may make, and how long one call may take.
    tools_enabled: bool = True
    tool_max_rounds: int = 8
    tool_timeout_s: float = 120.0
    # The local OpenAI-compatible server (Settings → Local server): off until the user turns it on.
    server_enabled: bool = False
    server_port: int = 8000  # on 127.0.0.1 only; 0 picks a free port
    server_api_key: str = ""  # empty: no key asked (only programs on this computer can connect)
    # "Connect to an Olmo server": the last server's address and key (the dialog offers them again; the key shows
    # as dots).
    remote_url: str = ""
    remote_api_key: str = ""
    remote_connected: bool = False  # connected when the app quit: it reconnects at the next start

    @property
    def memory_budget_bytes(self) -> int:
        return int(self.memory_budget_gb * 1024**3)

    def context_for(self, model: Any, budget: Any = None) -> int | None:
        """The context length for ``model`` (a folder path, ``ModelInfo``, listed model or catalog entry): the one
        chosen for it, else the model's maximum or what fits, whichever is smaller. None if its size is unknown."""
        from olmo3.fit import ModelShape, default_context

        shape = ModelShape.of_any(model) if not isinstance(model, str | Path) else _shape_of_folder(model)
        if shape is None:
            return None
        key = model if isinstance(model, str | Path) else getattr(model, "path", None)
        chosen = self.model_context.get(str(key)) if key else None
        return min(chosen, shape.max_context) if chosen else default_context(shape, budget)

    @property
    def kv_bits(self) -> int | None:
        return 8 if self.kv_8bit else None

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
            elif f.name == "model_context":
                if isinstance(value, dict):
                    values[f.name] = {
                        str(k): int(v)
                        for k, v in value.items()
                        if isinstance(v, int) and not isinstance(v, bool) and v > 0
                    }
            elif f.name == "theme":
                if value in THEMES:
                    values[f.name] = value
                else:
                    log.warning("settings: unknown theme %r, using %r", value, default)
            elif isinstance(default, bool):
                if isinstance(value, bool):
                    values[f.name] = value
            elif isinstance(default, int):
                lo, hi = (0, 65535) if f.name == "server_port" else (1, 1_000)
                if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
                    values[f.name] = value
                else:
                    what = "a port number" if f.name == "server_port" else "a whole number from 1 to 1,000"
                    log.warning("settings: ignoring %s=%r (not %s)", f.name, value, what)
            elif isinstance(default, float):
                try:
                    number = float(value)
                except (TypeError, ValueError, OverflowError):
                    number = math.nan
                if math.isfinite(number) and 0.0 <= number <= MAX_MEMORY_BUDGET_GB:
                    values[f.name] = number
                else:
                    log.warning(
                        "settings: ignoring %s=%r (not a number from 0 to %s)", f.name, value, MAX_MEMORY_BUDGET_GB
                    )
            elif isinstance(default, str) and isinstance(value, str):
                if _storable(value):
                    values[f.name] = value
                else:
                    log.warning("settings: ignoring %s (not text a path or prompt can hold)", f.name)
        return replace(base, **values)


def _storable(text: str) -> bool:
    """No NUL (a path with one raises in every file call) and no unpaired surrogate (UTF-8 cannot hold it)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shape_of_folder(path: str | Path) -> Any:
    from olmo3.fit import ModelShape
    from olmo3.model.modelinfo import ModelLoadError, inspect_model_dir

    try:
        return ModelShape.of(inspect_model_dir(path))
    except (ModelLoadError, OSError):
        return None


def load_settings(path: Path) -> Settings:
    """Read settings; a missing file gives defaults, a corrupt one is kept aside as ``.bad`` and defaults are used."""
    try:
        data = read_json(path, max_bytes=SETTINGS_MAX_BYTES)  # bounded in size and depth, like every file from outside
    except FileNotFoundError:
        return Settings()
    except OSError as exc:
        log.error("settings: cannot read %s: %s", path, exc)
        return Settings()
    except ValueError as exc:
        bad = path.with_suffix(".json.bad")
        log.error("settings: %s is not valid JSON (%s); keeping it as %s and using defaults", path, exc, bad)
        with contextlib.suppress(OSError):
            path.replace(bad)
        return Settings()
    return Settings.from_dict(data)


def save_settings(path: Path, settings: Settings) -> None:
    """Write atomically (temp file + rename) so a crash mid-write never leaves a truncated file."""
    write_atomic(path, (json.dumps(settings.to_dict(), indent=2, sort_keys=True) + "\n").encode("utf-8"))
