"""``olmo3 chat --attach FILE``: documents in a terminal chat, planned per turn exactly as the app plans them.

The files are read before the model loads (a bad file is one line on stderr and exit 2, before any wait), indexed
in an in-memory SQLite database (:data:`olmo3.docs.index.SCHEMA`: nothing is written to disk) and counted with the
model's own tokenizer. Every user turn goes through :func:`olmo3.docs.turn.plan_turn` against the context the
engine reports as left: a document that fits in half of it goes in whole, once (later turns find it in the cached
transcript); a longer one is retrieved from for every message. ``--json`` lines carry each turn's
``attachments: [{name, mode, tokens, passages: [{page, text}]}]``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..chat.events import ConversationOpened, Event, TurnFinished
from ..chat.transcript import OverflowPolicy
from ..docs import index
from ..docs.turn import TurnPlan, documents_on_path, plan_turn, prepare, remaining_context, tokenizer_counter

CONVERSATION = "cli"


class CliAttachments:
    """The attached files of one ``olmo3 chat`` and the plan of each user turn on the active path."""

    def __init__(self, paths: Sequence[str], model_dir: str | Path | None) -> None:
        """Read every file (``DocumentError`` names the first that can't be attached) and index it in memory."""
        self.count = tokenizer_counter(model_dir)
        prepared = [prepare(p, count_tokens=self.count) for p in paths]
        self.conn = sqlite3.connect(":memory:", isolation_level=None)
        index.ensure_schema(self.conn)
        self.ids = [index.add_document(self.conn, CONVERSATION, p.doc, p.passages, tokens=p.tokens) for p in prepared]
        self.turns: list[TurnPlan] = []  # the plan of each user turn on the active path, in order

    def __bool__(self) -> bool:
        return bool(self.ids)

    def plan(self, message: str, user_turn: int, *, limit: int, used: int, max_tokens: int) -> TurnPlan:
        """The plan of user turn ``user_turn`` (a new one, or an edit of an old one) with ``message``."""
        _, whole = documents_on_path((t.provenance(), True) for t in self.turns[:user_turn])
        return plan_turn(
            self.conn,
            CONVERSATION,
            message,
            self.ids,
            remaining_context=remaining_context(limit, used, max_tokens),
            in_transcript=whole,
            count_tokens=self.count,
        )

    def record(self, plan: TurnPlan, user_turn: int) -> None:
        """The turn ran: it is user turn ``user_turn`` of the active path now (later turns are gone on an edit)."""
        del self.turns[user_turn:]
        self.turns.append(plan)

    def last(self) -> TurnPlan | None:
        return self.turns[-1] if self.turns else None

    def close(self) -> None:
        self.conn.close()


class DocumentTurns:
    """Submits ``olmo3 chat``'s turns to the engine with their documents, and follows the context the engine reports.

    ``send``/``regenerate``/``edit`` return the engine job; :meth:`finished` reads the job's events and returns the
    turn's ``attachments`` for its JSON line (an empty list for a turn that added no document).
    """

    def __init__(self, engine: Any, conv: str, docs: CliAttachments | None, *, tools: Any = None) -> None:
        """``tools``: the turns' ``olmo3.tools.runner.HubTools`` (``--tools``), or None."""
        self.engine, self.conv, self.docs, self.tools = engine, conv, docs, tools
        self.limit = self.used = self.max_tokens = self.users = 0
        self._pending: tuple[TurnPlan, int] | None = None

    def opened(self, events: Sequence[Event]) -> None:
        """The conversation is open: its context numbers, and the reply length its session keeps free."""
        for e in events:
            if isinstance(e, ConversationOpened):
                self.used, self.limit = e.context_used, e.context_limit
        box: dict[str, int] = {}
        job = self.engine.call(lambda eng: box.update(n=eng.sessions[self.conv].sampling.max_tokens))
        self.engine.wait(job)
        self.max_tokens = int(box.get("n", 0))

    def _plan(self, text: str, user_turn: int, sampling: dict[str, Any] | None) -> str | None:
        if not self.docs:
            self._pending = None
            return None
        max_tokens = int((sampling or {}).get("max_tokens") or self.max_tokens)
        plan = self.docs.plan(text, user_turn, limit=self.limit, used=self.used, max_tokens=max_tokens)
        self._pending = (plan, user_turn)
        return plan.prompt_text if plan.attachments else None

    def send(
        self,
        text: str,
        sampling: dict[str, Any] | None = None,
        *,
        overflow: OverflowPolicy = "error",
        documents: bool = True,
    ) -> int:
        """A new user message; ``documents=False`` sends it without any (``/continue``)."""
        if documents:
            prompt_text = self._plan(text, self.users, sampling)
        else:
            prompt_text, self._pending = None, (TurnPlan(text, text), self.users)
        return int(
            self.engine.send(
                self.conv, text, prompt_text=prompt_text, sampling=sampling, overflow=overflow, tools=self.tools
            )
        )

    def edit(self, user_turn: int, text: str, sampling: dict[str, Any] | None = None) -> int:
        prompt_text = self._plan(text, user_turn, sampling)
        return int(
            self.engine.edit(self.conv, user_turn, text, prompt_text=prompt_text, sampling=sampling, tools=self.tools)
        )

    def regenerate(self, sampling: dict[str, Any] | None = None) -> int:
        self._pending = None  # the same user message: the documents it carried
        return int(self.engine.regenerate(self.conv, sampling=sampling, tools=self.tools))

    def finished(self, events: Sequence[Event]) -> list[dict[str, Any]]:
        fin = next((e for e in events if isinstance(e, TurnFinished)), None)
        pending, self._pending = self._pending, None
        if fin is None or fin.reply is None:
            return []
        self.used, self.limit = fin.stats.context_used, fin.stats.context_limit
        self.users = sum(1 for m in fin.messages if m.role == "user")
        if self.docs is None:
            return []
        if pending is not None:
            self.docs.record(*pending)
            return [a.to_json() for a in pending[0].attachments]
        last = self.docs.last()  # regenerate: what the answered message carried
        return [a.to_json() for a in last.attachments] if last is not None else []


def describe(attachments: Sequence[dict[str, Any]]) -> str:
    """Interactive mode: one line per document of the turn, and its sources."""
    lines = []
    for a in attachments:
        how = "whole" if a["mode"] == "whole" else f"{len(a['passages'])} passage(s)"
        lines.append(f"  [document] {a['name']} · {a['tokens']:,} tokens · {how}")
        pages = ", ".join(f"page {p['page']}" for p in a["passages"])
        if pages:
            lines.append(f"  Sources: {a['name']}: {pages}")
    return "\n".join(lines)
