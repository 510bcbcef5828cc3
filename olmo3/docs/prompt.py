"""Put documents into a user turn: the whole text when it fits, else the passages that match the message.

Why it looks the way it does:

* A document that fits in half of the context still left goes in whole: the model then sees everything,
  and there is nothing to get wrong. The other half stays for the conversation and the reply. A longer
  document is retrieved from: the passages that best match each user message (BM25), within a token budget.
* Documents come before the person's message in the turn, so the question is the last thing the model
  reads (long-context models answer better that way), and each block is delimited by plain, readable lines
  that name the file and, for passages, the pages, so the reply can cite them.
* The result is *content*. The session must hand it to the chat template as the user message's text, and
  the tokenizer must encode it as plain text: a document containing ``<|im_start|>system`` stays those
  characters, never the special token. Nothing here makes or escapes markup; the delimiters are text too.
* When a message matches nothing ("summarize this"), the document's opening passages stand in, so the
  model still has something to read rather than nothing.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .extract import Document
from .index import Hit, first_passages, search

__all__ = [
    "DEFAULT_MAX_PASSAGES",
    "Mode",
    "TurnAttachment",
    "choose_modes",
    "format_passages",
    "format_user_turn",
    "format_whole",
    "retrieve_for_turn",
    "whole_or_retrieved",
]

Mode = Literal["whole", "retrieved"]
DEFAULT_MAX_PASSAGES: Final = 6
_RULE: Final = "-----"


def whole_or_retrieved(doc_tokens: int, remaining_context: int) -> Mode:
    """``"whole"`` when the document fits in half of the remaining context, else ``"retrieved"``."""
    return "whole" if 0 <= doc_tokens <= max(0, remaining_context) // 2 else "retrieved"


def choose_modes(doc_tokens: Sequence[int], remaining_context: int) -> list[Mode]:
    """Modes for several documents sharing one turn: whole, in order, while together they fit in half."""
    budget = max(0, remaining_context) // 2
    modes: list[Mode] = []
    for n in doc_tokens:
        if 0 <= n <= budget:
            modes.append("whole")
            budget -= n
        else:
            modes.append("retrieved")
    return modes


def _name(name: str) -> str:
    """A file name fit for a one-line delimiter: no line breaks or control characters, not endless."""
    clean = " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", name).split()) or "untitled"
    return clean if len(clean) <= 120 else clean[:117] + "..."


def format_whole(doc: Document) -> str:
    """The whole document between a header and a footer line; a multi-page document labels its pages."""
    name = _name(doc.name)
    pages = f", {doc.page_count} pages" if doc.page_count > 1 else ""
    lines = [f"{_RULE} Attached file: {name} (whole document{pages}) {_RULE}"]
    if doc.page_count > 1:
        lines.append("\n\n".join(f"[Page {p.number}]\n{p.text.strip()}" for p in doc.pages if p.text.strip()))
    else:
        lines.append(doc.text.strip())
    lines.append(f"{_RULE} End of attached file: {name} {_RULE}")
    return "\n".join(lines)


def format_passages(name: str, hits: Sequence[Hit], *, page_count: int | None = None) -> str:
    """Passages of one file, each labelled with the file and its pages, in document order."""
    name = _name(name)
    of = f" of {page_count} pages" if page_count and page_count > 1 else ""
    n = len(hits)
    lines = [f"{_RULE} Attached file: {name} ({n} passage{'s' if n != 1 else ''}{of}, chosen for this message) {_RULE}"]
    for hit in sorted(hits, key=lambda h: h.ordinal):
        lines.append(f"[{name}, {hit.page_label}]\n{hit.text.strip()}\n")
    lines.append(f"{_RULE} End of passages from: {name} {_RULE}")
    return "\n".join(lines)


def format_user_turn(message: str, blocks: Iterable[str]) -> str:
    """The user turn's text: the document blocks, then the person's message, unchanged."""
    parts = [b for b in blocks if b]
    return "\n\n".join([*parts, message]) if parts else message


def retrieve_for_turn(
    conn: sqlite3.Connection,
    conv_id: str,
    message: str,
    budget_tokens: int,
    *,
    attachment_ids: Sequence[int] | None = None,
    max_passages: int = DEFAULT_MAX_PASSAGES,
) -> list[Hit]:
    """The best passages for ``message`` that fit in ``budget_tokens``, best first (see the module docstring).

    Takes the BM25 ranking in order and skips a passage that would overflow the budget (a smaller one
    further down may still fit). With no match at all, the first passages of each attachment stand in.
    """
    hits = search(conn, conv_id, message, max_passages * 2, attachment_ids=attachment_ids)
    if not hits:
        ids = (
            list(attachment_ids)
            if attachment_ids is not None
            else [row[0] for row in conn.execute("SELECT id FROM attachments WHERE conversation_id = ?", (conv_id,))]
        )
        hits = [h for aid in ids for h in first_passages(conn, aid, max_passages)]
    chosen: list[Hit] = []
    used = 0
    for hit in hits:
        if len(chosen) == max_passages:
            break
        if used + hit.tokens <= budget_tokens:
            chosen.append(hit)
            used += hit.tokens
    return chosen


@dataclass(frozen=True)
class TurnAttachment:
    """What one attachment contributed to one turn: for the chips, "Sources", exports and ``--json``."""

    name: str
    mode: Mode
    tokens: int
    pages: int
    passages: tuple[Hit, ...] = field(default=())
    attachment_id: int | None = None  # the attachment's row (the store's, or an in-memory index's)

    @property
    def chip_label(self) -> str:
        """``"report.pdf · 12 pages · 3,400 tokens · whole"`` or ``"… · 4 passages"``."""
        pages = f"{self.pages} page{'s' if self.pages != 1 else ''}"
        n = len(self.passages)
        how = "whole" if self.mode == "whole" else f"{n} passage{'s' if n != 1 else ''}"
        return f"{self.name} · {pages} · {self.tokens:,} tokens · {how}"

    def sources(self) -> list[str]:
        """``"report.pdf, page 3"`` for each passage used (the "Sources" line under the reply)."""
        return [f"{self.name}, {h.page_label}" for h in self.passages]

    def to_json(self) -> dict[str, Any]:
        """``{name, mode, tokens, passages: [{page, text}]}`` (``page_end`` too when a passage spans pages)."""
        passages: list[dict[str, Any]] = []
        for h in self.passages:
            item: dict[str, Any] = {"page": h.page_start, "text": h.text}
            if h.page_end != h.page_start:
                item["page_end"] = h.page_end
            passages.append(item)
        return {"name": self.name, "mode": self.mode, "tokens": self.tokens, "passages": passages}
