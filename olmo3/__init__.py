"""Olmo-3 on MLX: the model, loading, the chat engine, stores and the CLI. Never imports Qt."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load", "ModelLoadError", "ChatSession", "Engine", "__version__"]


def __getattr__(name: str):
    # Lazy imports keep `import olmo3` cheap (the CLI's --help, the GUI's start-up).
    if name in ("load", "ModelLoadError"):
        from . import loader

        return getattr(loader, name)
    if name == "ChatSession":
        from .session import ChatSession

        return ChatSession
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(name)
