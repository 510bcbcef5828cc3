"""Identifiers for things we keep: conversations, messages, nodes of the message tree."""

from __future__ import annotations

import uuid

__all__ = ["new_id"]


def new_id() -> str:
    """A fresh random id: a version-4 UUID in its canonical text form (36 characters, with dashes)."""
    return str(uuid.uuid4())
