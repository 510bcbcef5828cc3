"""Documents in a conversation's turns: prepare a file once, plan each user turn, and record what the turn used.

The pieces the app and ``olmo3 chat --attach`` share (both run them off the engine thread, without MLX):

* :func:`prepare` reads, splits and counts a file (the slow part: the GUI runs it on its chores thread) into a
  :class:`Prepared`, or raises the :class:`~olmo3.docs.extract.DocumentError` that says why not.
* :func:`plan_turn` decides, for one user message, which attachments go in whole and which are retrieved from
  (:func:`~olmo3.docs.prompt.choose_modes` against the context that is left), retrieves the passages and writes
  the turn's text (:func:`~olmo3.docs.prompt.format_user_turn`). The person's message is shown as typed; the
  :attr:`TurnPlan.prompt_text` is what the model reads, and the session keeps it as that message's rendered text,
  so later turns reuse its cached tokens and never read a whole document twice.
* Which documents a turn considers: every attachment the user turns above it used (and those attached to this
  message), except those already in the transcript whole: :func:`documents_on_path` reads that from the turns'
  records. A document that went in whole stays in the cached transcript; one retrieved from is searched again
  for every message, with that message's words.
* A turn's record (:func:`to_provenance`, :func:`from_provenance`) is plain JSON kept on the user message: the
  chips, "Sources", exports and ``--json`` all read it, and it keeps the passages' text, so it shows what the
  model read even after the attachment is gone.
* Tokens are counted as content (:func:`tokenizer_counter`: the model's own ``tokenizer.json`` through
  ``tokenizers``, special tokens split into text), the way the session encodes a message's text.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .chunk import Passage, TokenCounter, approx_tokens, chunk
from .extract import DEFAULT_MAX_BYTES, Document, extract, extract_bytes
from .index import Hit, list_attachments, load_document
from .prompt import (
    DEFAULT_MAX_PASSAGES,
    Mode,
    TurnAttachment,
    choose_modes,
    format_passages,
    format_user_turn,
    format_whole,
    retrieve_for_turn,
)

__all__ = [
    "PROVENANCE_KEY",
    "Prepared",
    "TurnPlan",
    "documents_on_path",
    "from_provenance",
    "plan_turn",
    "prepare",
    "prepare_bytes",
    "remaining_context",
    "to_provenance",
    "tokenizer_counter",
]

PROVENANCE_KEY: Final = "attachments"
"""The key of a user message's provenance that holds its turn's documents (a list of :func:`to_provenance` items)."""


@dataclass(frozen=True)
class Prepared:
    """A file read, split into passages and counted: ready to be indexed for a conversation."""

    doc: Document
    passages: tuple[Passage, ...]
    tokens: int  # the whole text's content tokens: what putting it in whole costs

    @property
    def name(self) -> str:
        return self.doc.name


def _prepared(doc: Document, count_tokens: TokenCounter) -> Prepared:
    passages = tuple(chunk(doc, count_tokens=count_tokens))
    return Prepared(doc, passages, count_tokens(doc.text))


def prepare(
    path: str | os.PathLike[str], *, count_tokens: TokenCounter = approx_tokens, max_bytes: int = DEFAULT_MAX_BYTES
) -> Prepared:
    """Read ``path`` (never writing it), split it and count its tokens; :class:`DocumentError` if it can't be."""
    return _prepared(extract(path, max_bytes=max_bytes), count_tokens)


def prepare_bytes(
    name: str, data: bytes, *, count_tokens: TokenCounter = approx_tokens, max_bytes: int = DEFAULT_MAX_BYTES
) -> Prepared:
    """:func:`prepare` for a file's bytes already in memory (a pasted file)."""
    return _prepared(extract_bytes(name, data, max_bytes=max_bytes), count_tokens)


def tokenizer_counter(model_dir: str | os.PathLike[str] | None) -> TokenCounter:
    """Count content tokens with the model folder's ``tokenizer.json`` (no MLX, no transformers).

    Special tokens typed in a document count as the text they are (``encode_special_tokens``), as the session
    encodes message content. Without a readable tokenizer the cheap estimate (:func:`approx_tokens`) stands in.
    A counter is for one thread: the GUI makes and uses it on its chores thread.
    """
    if model_dir is None:
        return approx_tokens
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    except Exception:  # a missing or unreadable file, or no tokenizers library: estimate instead
        return approx_tokens
    tokenizer.encode_special_tokens = True

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids) if text else 0

    return count


# ------------------------------------------------------------------------------------------------------------
# A turn's record
# ------------------------------------------------------------------------------------------------------------


def to_provenance(attachments: Iterable[TurnAttachment]) -> list[dict[str, Any]]:
    """A turn's documents as plain JSON (for the user message's provenance; :func:`from_provenance` reads it)."""
    return [
        {
            "attachment_id": a.attachment_id,
            "name": a.name,
            "mode": a.mode,
            "tokens": a.tokens,
            "pages": a.pages,
            "passages": [
                {
                    "ordinal": h.ordinal,
                    "page_start": h.page_start,
                    "page_end": h.page_end,
                    "tokens": h.tokens,
                    "text": h.text,
                }
                for h in a.passages
            ],
        }
        for a in attachments
    ]


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def from_provenance(provenance: Mapping[str, Any] | None) -> list[TurnAttachment]:
    """The documents a user message's provenance records (malformed items are left out, never raised on)."""
    items = provenance.get(PROVENANCE_KEY) if isinstance(provenance, Mapping) else None
    out: list[TurnAttachment] = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            continue
        mode: Mode = "whole" if item.get("mode") == "whole" else "retrieved"
        attachment_id = item.get("attachment_id")
        aid = attachment_id if isinstance(attachment_id, int) and not isinstance(attachment_id, bool) else None
        hits = []
        passages = item.get("passages")
        for p in passages if isinstance(passages, list) else ():
            if isinstance(p, Mapping) and isinstance(p.get("text"), str):
                start = _int(p.get("page_start"), 1)
                hits.append(
                    Hit(
                        aid or 0,
                        item["name"],
                        _int(p.get("ordinal")),
                        start,
                        _int(p.get("page_end"), start),
                        p["text"],
                        _int(p.get("tokens")),
                        0.0,
                    )
                )
        out.append(
            TurnAttachment(
                item["name"], mode, _int(item.get("tokens")), _int(item.get("pages"), 1), tuple(hits), attachment_id=aid
            )
        )
    return out


def documents_on_path(user_turns: Iterable[tuple[Mapping[str, Any] | None, bool]]) -> tuple[list[int], set[int]]:
    """From the user turns above a new one (``(provenance, in_context)`` each, oldest first): every attachment id
    they used, in first-use order, and the ids whose whole text is in the transcript (in a turn still in context)."""
    used: dict[int, None] = {}
    whole: set[int] = set()
    for provenance, in_context in user_turns:
        for a in from_provenance(provenance):
            if a.attachment_id is None:
                continue
            used.setdefault(a.attachment_id)
            if a.mode == "whole" and in_context:
                whole.add(a.attachment_id)
    return list(used), whole


# ------------------------------------------------------------------------------------------------------------
# Planning a turn
# ------------------------------------------------------------------------------------------------------------


def remaining_context(context_limit: int, context_used: int, max_tokens: int) -> int:
    """Tokens a new turn's documents and message may use: the context limit less the transcript and a reply's room.

    The engine reports ``context_used``/``context_limit`` after every turn (and when a conversation opens). The
    reply's maximum length is a cap, not a reservation (the session lets a reply run until the context is full), so
    only ``min(max_tokens, context_limit // 8)`` is kept free here; and since documents go in whole only while they
    fit in half of what this returns, the other half is the reply's too.
    """
    limit = max(0, int(context_limit))
    reserve = min(max(0, int(max_tokens)), limit // 8)
    return max(0, limit - int(context_used) - reserve)


@dataclass(frozen=True)
class TurnPlan:
    """What one user turn sends: the text the model reads, and what each document contributed."""

    message: str  # as the person typed it (what the chat shows)
    prompt_text: str  # what the model reads: document blocks, then the message
    attachments: tuple[TurnAttachment, ...] = ()

    def provenance(self) -> dict[str, Any] | None:
        """``{"attachments": [...]}`` for the user message, or None when the turn used no document."""
        return {PROVENANCE_KEY: to_provenance(self.attachments)} if self.attachments else None


def plan_turn(
    conn: sqlite3.Connection,
    conv_id: str,
    message: str,
    attachment_ids: Sequence[int],
    *,
    remaining_context: int,
    in_transcript: Collection[int] = (),
    count_tokens: TokenCounter = approx_tokens,
    max_passages: int = DEFAULT_MAX_PASSAGES,
) -> TurnPlan:
    """The turn's text for ``message`` with the conversation's attachments ``attachment_ids``.

    ``remaining_context``: tokens the turn may still use (:func:`remaining_context`: the context limit minus the
    transcript and room for a reply). Attachments in ``in_transcript`` (already there whole) are left out; the
    others go in whole, in order, while together they fit in half of what remains after the message, and the rest
    are retrieved from: their best passages for this message, within what the whole documents left of that half.
    Ids the conversation does not have (an attachment removed meanwhile) are ignored.
    """
    known = {a.id: a for a in list_attachments(conn, conv_id)}
    ids = [i for i in dict.fromkeys(attachment_ids) if i in known and i not in in_transcript]
    if not ids:
        return TurnPlan(message, message)
    remaining = max(0, remaining_context - count_tokens(message))
    modes = choose_modes([known[i].tokens for i in ids], remaining)
    whole_tokens = sum(known[i].tokens for i, mode in zip(ids, modes, strict=True) if mode == "whole")
    retrieved = [i for i, mode in zip(ids, modes, strict=True) if mode == "retrieved"]
    hits: list[Hit] = []
    if retrieved:
        budget = max(0, remaining // 2 - whole_tokens)
        hits = retrieve_for_turn(conn, conv_id, message, budget, attachment_ids=retrieved, max_passages=max_passages)
    blocks: list[str] = []
    used: list[TurnAttachment] = []
    for attachment_id, mode in zip(ids, modes, strict=True):
        a = known[attachment_id]
        mine = tuple(sorted((h for h in hits if h.attachment_id == attachment_id), key=lambda h: h.ordinal))
        if mode == "whole":
            blocks.append(format_whole(load_document(conn, attachment_id)))
        elif mine:
            blocks.append(format_passages(a.name, mine, page_count=a.page_count))
        used.append(TurnAttachment(a.name, mode, a.tokens, a.page_count, mine, attachment_id=attachment_id))
    return TurnPlan(message, format_user_turn(message, blocks), tuple(used))
