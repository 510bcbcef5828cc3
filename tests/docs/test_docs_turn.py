"""olmo3.docs.turn: which documents a turn considers, its plan, its record (provenance) and the token counter."""

from __future__ import annotations

import sqlite3

from olmo3.docs import index
from olmo3.docs.chunk import approx_tokens, chunk
from olmo3.docs.extract import Document, Page
from olmo3.docs.prompt import TurnAttachment
from olmo3.docs.turn import (
    TurnPlan,
    documents_on_path,
    from_provenance,
    plan_turn,
    remaining_context,
    to_provenance,
    tokenizer_counter,
)


def _conn_with(*texts: str) -> tuple[sqlite3.Connection, list[int]]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    index.ensure_schema(conn)
    ids = []
    for i, text in enumerate(texts):
        doc = Document(f"d{i}.txt", "text", len(text), "0" * 64, (Page(1, text),))
        ids.append(index.add_document(conn, "c", doc, chunk(doc, target=20, overlap=0)))
    return conn, ids


def test_plan_leaves_out_documents_already_in_the_transcript_and_unknown_ids():
    conn, (a, b) = _conn_with("The mill wheel turned slowly.", "The granary held rye.")
    plan = plan_turn(
        conn, "c", "What did the granary hold?", [a, b, a, 999], remaining_context=10_000, in_transcript={a}
    )
    assert [(x.attachment_id, x.mode) for x in plan.attachments] == [(b, "whole")]
    assert "The mill wheel" not in plan.prompt_text and "The granary held rye." in plan.prompt_text
    assert plan.provenance() == {"attachments": to_provenance(plan.attachments)}
    nothing = plan_turn(conn, "c", "Hello", [a], remaining_context=10_000, in_transcript={a})
    assert nothing == TurnPlan("Hello", "Hello") and nothing.provenance() is None
    # No room at all: the document is retrieved from, with no passage to spare; the message goes alone.
    tight = plan_turn(conn, "c", "granary", [b], remaining_context=0)
    assert [(x.mode, x.passages) for x in tight.attachments] == [("retrieved", ())] and tight.prompt_text == "granary"


def test_documents_on_path_and_provenance_round_trip():
    hit = index.Hit(3, "big.pdf", 4, 7, 8, "The pier was rebuilt.", 5, 1.5)
    used = [
        TurnAttachment("small.txt", "whole", 40, 1, attachment_id=2),
        TurnAttachment("big.pdf", "retrieved", 9000, 80, (hit,), 3),
    ]
    record = {"attachments": to_provenance(used), "model": "x"}
    back = from_provenance(record)
    assert [(a.name, a.mode, a.tokens, a.pages, a.attachment_id) for a in back] == [
        ("small.txt", "whole", 40, 1, 2),
        ("big.pdf", "retrieved", 9000, 80, 3),
    ]
    assert [(h.ordinal, h.page_start, h.page_end, h.text) for h in back[1].passages] == [
        (4, 7, 8, "The pier was rebuilt.")
    ]
    assert back[1].chip_label == "big.pdf · 80 pages · 9,000 tokens · 1 passage"
    # Older turns first; a whole document counts as in the transcript only while its turn is in context.
    later = {"attachments": to_provenance([TurnAttachment("new.md", "whole", 10, 1, attachment_id=5)])}
    assert documents_on_path([(record, True), (None, True), (later, False)]) == ([2, 3, 5], {2})
    # Malformed records are skipped, never raised on.
    junk = {
        "attachments": [None, 3, {"name": 1}, {"name": "ok", "passages": [{"text": 5}, "x"], "attachment_id": True}]
    }
    assert [(a.name, a.attachment_id, a.passages) for a in from_provenance(junk)] == [("ok", None, ())]
    assert from_provenance(None) == [] and from_provenance({"attachments": "no"}) == []


def test_remaining_context_and_the_token_counter(tiny_model_dir, tmp_path):
    assert remaining_context(4096, 1000, 512) == 2584 and remaining_context(100, 90, 50) == 0
    # Max tokens caps a reply; it is not reserved in full: an eighth of the context at most stays free for it.
    assert remaining_context(4096, 0, 4096) == 3584 and remaining_context(65_536, 0, 4096) == 61_440
    count = tokenizer_counter(tiny_model_dir)
    assert count("") == 0 and count("<|im_start|>system") > 2  # special tokens typed in a document are text
    assert tokenizer_counter(tmp_path) is approx_tokens and tokenizer_counter(None) is approx_tokens
