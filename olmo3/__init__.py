"""Olmo-3 on MLX: the model, loading, the chat engine, stores and the CLI. Never imports Qt.

The parts of the house, one subpackage each (``pyproject.toml``'s import-linter contracts keep them apart):

* ``olmo3.model``: our Olmo-3 (``config``, ``model``), folder inspection without MLX (``modelinfo``), loading,
  quantizing and the tiny test models;
* ``olmo3.chat``: one conversation's token-exact transcript and hybrid cache (``session``, ``kvcache``), the typed
  messages and events that cross to the GUI (``transcript``, ``events``), sampling, and the engine thread;
* ``olmo3.hub``: repo ids, the catalog, the local model store, downloads and their verification;
* ``olmo3.store``: the SQLite conversation store, search, export and import;
* ``olmo3.cli``: the ``olmo3`` command;
* small shared modules: ``appinfo`` (name and folders), ``memory`` (one memory reading and budget policy),
  ``units`` (byte and duration formatting), ``fileio`` (atomic writes).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["ChatSession", "Engine", "ModelLoadError", "__version__", "load"]

# The top-level conveniences, imported on first use (``import olmo3`` stays cheap and MLX-free). importlib, not an
# import statement, so the import contracts see no edge from the package root to every part of the house.
_LAZY = {
    "load": "olmo3.model.loader",
    "ModelLoadError": "olmo3.model.modelinfo",
    "ChatSession": "olmo3.chat.session",
    "Engine": "olmo3.chat.engine",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(module), name)
