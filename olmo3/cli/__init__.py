"""The ``olmo3`` command line: ``main`` dispatches to the subcommands in this package."""

from __future__ import annotations

from .main import main

__all__ = ["main"]
