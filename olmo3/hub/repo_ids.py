"""Hugging Face repo ids (``owner/name``): validated before any path or URL is built from one."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_REPO_PART_LEN", "InvalidRepoIdError", "repo_id_from_text", "validate_repo_id"]

MAX_REPO_PART_LEN: Final = 96
_REPO_PART_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_EXAMPLE = "e.g. mlx-community/Olmo-3-7B-Instruct-4bit"


class InvalidRepoIdError(ValueError):
    """A repo id or model name that is not a plain ``owner/name``; raised before any path is built from it."""


def validate_repo_id(repo_id: object) -> str:
    """Return ``repo_id`` (surrounding spaces removed) if it is a safe ``owner/name``, else raise InvalidRepoIdError.

    Both parts: 1-96 characters from ``A-Z a-z 0-9 . _ -``, not starting or ending with ``.`` or ``-``, no ``..``
    and no ``--`` (the Hub forbids both). This rules out absolute paths, ``..`` traversal, drive letters,
    backslashes and URL syntax, so ``models_dir / owner / name`` always stays inside ``models_dir``.
    """
    if not isinstance(repo_id, str):
        raise InvalidRepoIdError(f"repo id must be text like 'owner/name', got {type(repo_id).__name__}")
    text = repo_id.strip()
    if not text:
        raise InvalidRepoIdError(f"repo id is empty: expected 'owner/name', {_EXAMPLE}")
    if text.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", text):
        raise InvalidRepoIdError(f"repo id {text!r} looks like a file path: expected 'owner/name', {_EXAMPLE}")
    if "\\" in text:
        raise InvalidRepoIdError(f"repo id {text!r} contains a backslash: expected 'owner/name', {_EXAMPLE}")
    if ".." in text:
        raise InvalidRepoIdError(f"repo id {text!r}: '..' is not allowed (expected 'owner/name', {_EXAMPLE})")
    parts = text.split("/")
    if len(parts) != 2:
        raise InvalidRepoIdError(f"repo id {text!r} must have exactly one '/' (owner/name), {_EXAMPLE}")
    for label, part in zip(("owner", "name"), parts, strict=True):
        if not part:
            raise InvalidRepoIdError(f"repo id {text!r} has an empty {label}")
        if "--" in part:
            raise InvalidRepoIdError(f"repo id {text!r}: '--' is not allowed in the {label}")
        if len(part) > MAX_REPO_PART_LEN:
            raise InvalidRepoIdError(f"repo id {text!r}: the {label} is longer than {MAX_REPO_PART_LEN} characters")
        if not _REPO_PART_CHARS.fullmatch(part):
            bad = sorted({c for c in part if not _REPO_PART_CHARS.fullmatch(c)})
            shown = " ".join(repr(c) for c in bad)
            raise InvalidRepoIdError(
                f"repo id {text!r}: the {label} may only use letters, digits, '.', '_' and '-' (found {shown})"
            )
        if part[0] in ".-" or part[-1] in ".-":
            raise InvalidRepoIdError(f"repo id {text!r}: the {label} may not start or end with '.' or '-'")
    return text


def repo_id_from_text(text: str) -> str:
    """Accept what users paste: ``owner/name`` or a ``https://huggingface.co/owner/name[/tree/main...]`` URL."""
    t = text.strip()
    m = re.match(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/(.*)$", t)
    if m:
        rest = m.group(1).split("?")[0].split("#")[0].strip("/").split("/")
        t = "/".join(rest[:2])
    return validate_repo_id(t)
