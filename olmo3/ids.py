"""Message and conversation ids: shared by the store and the chat engine, so one message has one id everywhere."""

from __future__ import annotations

import uuid


def new_id() -> str:
    """A fresh random id (a UUID4 string; also valid in cache file names)."""
    return str(uuid.uuid4())
