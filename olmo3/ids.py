"""Identifiers for things we keep: conversations, messages, nodes of the message tree."""

from __future__ import annotations

import re
import uuid

__all__ = ["check_conv_id", "new_id"]

_CONV_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def new_id() -> str:
    """A fresh random id: a version-4 UUID in its canonical text form (36 characters, with dashes)."""
    return str(uuid.uuid4())


def check_conv_id(conv_id: str) -> None:
    """ValueError unless ``conv_id`` is a conversation id an engine accepts (it names cache files on disk)."""
    if not isinstance(conv_id, str) or not _CONV_ID.match(conv_id):
        raise ValueError(f"bad conversation id {conv_id!r}: use letters, digits, '-' or '_'")
