"""Full-text search (FTS5) over titles, messages, reasoning and tool calls: query building, snippets, ranking."""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Final

from .records import SearchHit

__all__ = ["MATCH_END", "MATCH_START", "SearchMixin", "build_fts_query", "snippet_to_html"]

# Match markers in search snippets: private-use code points that never occur in normal text, so
# the GUI can escape the snippet first and then turn the markers into <b>/<mark> (snippet_to_html).
MATCH_START: Final = "\ue000"
MATCH_END: Final = "\ue001"


def build_fts_query(text: str) -> str | None:
    """Turn what the user typed into a safe FTS5 query, or None when there is nothing to search.

    Every whitespace-separated term is quoted (so ``AND``, ``NEAR(``, ``"``, ``col:x`` and ``*``
    are plain text), terms are ANDed, and the last term is a prefix match while the user is still
    typing it (no trailing space).
    """
    terms = [t for t in text.split() if any(ch.isalnum() for ch in t)]
    if not terms:
        return None
    parts = ['"' + t.replace('"', '""') + '"' for t in terms]
    if not text[-1].isspace():
        parts[-1] += " *"
    return " ".join(parts)


def snippet_to_html(snippet: str, tag: str = "b") -> str:
    """Escape a search snippet for Qt rich text / HTML and turn the match markers into tags."""
    import html

    return html.escape(snippet, quote=False).replace(MATCH_START, f"<{tag}>").replace(MATCH_END, f"</{tag}>")


class SearchMixin:
    """:meth:`search` for :class:`olmo3.store.ConversationStore`."""

    if TYPE_CHECKING:  # provided by ConversationStore

        def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def search(self, query: str, limit: int = 50) -> list[SearchHit]:
        """Full-text search over titles, messages and reasoning of conversations not in the trash.

        Conversations whose title matches come first, then matching messages; each group is
        ranked by BM25 (reasoning and tool calls count half as much as the answer; a tool's result is a message's
        content). Diacritics and case
        are ignored, the last term matches as a prefix (as-you-type), FTS syntax is plain text.
        """
        fts = build_fts_query(query)
        if fts is None or limit <= 0:
            return []
        marks = (MATCH_START, MATCH_END)
        with self._read() as conn:
            title_rows = conn.execute(
                """SELECT c.id, NULL, c.title,
                          highlight(conversations_fts, 0, ?, ?), bm25(conversations_fts)
                   FROM conversations_fts JOIN conversations c ON c.seq = conversations_fts.rowid
                   WHERE conversations_fts MATCH ? AND c.deleted_at IS NULL
                   ORDER BY 5 LIMIT ?""",
                (*marks, fts, limit),
            ).fetchall()
            message_rows = conn.execute(
                """SELECT m.conversation_id, m.id, c.title,
                          snippet(messages_fts, -1, ?, ?, '…', 16), bm25(messages_fts, 1.0, 0.5, 0.5)
                   FROM messages_fts
                   JOIN messages m ON m.seq = messages_fts.rowid
                   JOIN conversations c ON c.id = m.conversation_id
                   WHERE messages_fts MATCH ? AND c.deleted_at IS NULL
                   ORDER BY 5 LIMIT ?""",
                (*marks, fts, limit),
            ).fetchall()
        # BM25 scores of the two tables are not on one scale (a handful of short titles gets
        # near-zero IDF), so title hits come first, then message hits, each best-first.
        hits = [SearchHit(*row) for row in title_rows + message_rows]
        return hits[:limit]
