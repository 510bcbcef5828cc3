"""Attached documents in the conversation store: indexing on another thread, a turn's plan, the trash and delete
forever, export (JSON in full, Markdown and HTML listing attachments and the passages used), import and duplicate."""

from __future__ import annotations

import copy
import json
import random
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from olmo3.docs.extract import Document, Page
from olmo3.docs.synth import prose
from olmo3.docs.turn import Prepared, from_provenance, prepare_bytes
from olmo3.store import ConversationStore, NotFoundError, interchange
from olmo3.store.attachments import index_document

PLANTED = "The lighthouse keeper Orla Quimby repainted the foghorn turquoise in 1911."


@pytest.fixture
def store(tmp_path: Path):
    s = ConversationStore(tmp_path / "conversations.sqlite3")
    yield s
    s.close()


def long_doc(name: str = "harbour.pdf", pages: int = 12) -> Prepared:
    rng = random.Random(7)
    texts = [prose(rng, 4) for _ in range(pages)]
    texts[pages // 2] += "\n\n" + PLANTED
    doc = Document(name, "pdf", 9000, "ab" * 32, tuple(Page(i + 1, t) for i, t in enumerate(texts)))
    from olmo3.docs.chunk import approx_tokens, chunk

    return Prepared(doc, tuple(chunk(doc, target=200, overlap=20)), approx_tokens(doc.text))


def counts(path: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM attachments), (SELECT count(*) FROM passages),"
            " (SELECT count(*) FROM passages_fts WHERE passages_fts MATCH 'quimby')"
        ).fetchone()
        conn.execute("INSERT INTO passages_fts(passages_fts) VALUES ('integrity-check')")
        return tuple(row)  # type: ignore[return-value]
    finally:
        conn.close()


def a_turn(store: ConversationStore, conv: str, ids: list[int], message: str, remaining: int) -> tuple[str, Any]:
    """A user message sent with documents, and its reply, recorded as the app records them."""
    plan = store.plan_turn(conv, message, ids, remaining_context=remaining)
    parent = store.active_leaf(conv)
    user = store.append_message(conv, parent.id if parent else None, "user", message, provenance=plan.provenance())
    store.bind_attachments(ids, user)
    store.append_message(conv, user, "assistant", "The foghorn was turquoise.")
    return user, plan


def test_index_document_on_another_thread_and_the_pending_chip(store: ConversationStore, tmp_path: Path) -> None:
    conv = store.create_conversation()
    result: dict[str, Any] = {}

    def chore() -> None:  # the chores thread, on a connection of its own
        result["id"] = index_document(store.path, conv, long_doc())

    worker = threading.Thread(target=chore)
    worker.start()
    worker.join()
    attachment = result["id"]
    [a] = store.attachments(conv)
    assert (a.id, a.name, a.page_count, a.message_id, a.passage_count > 1) == (
        attachment,
        "harbour.pdf",
        12,
        None,
        True,
    )
    assert store.attachments(conv, pending=True) == [a] and store.attachments(conv, pending=False) == []
    assert store.attachment_document(attachment).pages[6].text.endswith(PLANTED)

    # A conversation that does not exist gets nothing: no row, no passage.
    before = counts(store.path)
    with pytest.raises(NotFoundError):
        index_document(store.path, "nobody", long_doc())
    assert counts(store.path) == before

    # Removing the chip before sending removes the text, the passages and their index entries.
    store.remove_attachment(attachment)
    assert store.attachments(conv) == [] and counts(store.path) == (0, 0, 0)


def test_a_turn_plans_whole_or_passages_and_binds_its_attachments(store: ConversationStore) -> None:
    conv = store.create_conversation()
    small = store.add_attachment(conv, *_small("menu.txt", "Soup of the day: nettle."))
    big = store.add_attachment(conv, long_doc().doc, long_doc().passages, tokens=long_doc().tokens)
    tokens = long_doc().tokens
    user, plan = a_turn(store, conv, [small, big], "Who repainted the foghorn, and what colour?", remaining=tokens)
    modes = {a.name: (a.mode, len(a.passages)) for a in plan.attachments}
    assert modes["menu.txt"] == ("whole", 0)
    assert modes["harbour.pdf"][0] == "retrieved" and modes["harbour.pdf"][1] >= 1
    assert "Soup of the day: nettle." in plan.prompt_text and PLANTED in plan.prompt_text
    assert plan.prompt_text.endswith("Who repainted the foghorn, and what colour?")
    assert store.attachments(conv, pending=True) == []
    assert {a.message_id for a in store.attachments(conv)} == {user}
    # The message shows what was typed; its provenance records what the turn read.
    message = store.get_message(user)
    assert message.content == "Who repainted the foghorn, and what colour?"
    recorded = from_provenance(message.provenance)
    assert [(a.name, a.mode, a.attachment_id) for a in recorded] == [
        ("menu.txt", "whole", small),
        ("harbour.pdf", "retrieved", big),
    ]
    assert any(PLANTED in h.text for h in recorded[1].passages)
    # Searching messages never finds document text.
    assert store.search("nettle") == [] and store.search("turquoise")[0].message_id != user


def _small(name: str, text: str) -> tuple[Document, list[Any]]:
    from olmo3.docs.chunk import chunk

    doc = Document(name, "text", len(text), "cd" * 32, (Page(1, text),))
    return doc, chunk(doc)


def test_trash_keeps_attachments_and_delete_forever_and_purge_remove_them(store: ConversationStore) -> None:
    a, b, c = (store.create_conversation(title=t) for t in "abc")
    for conv in (a, b, c):
        index_document(store.path, conv, long_doc())
    first = counts(store.path)
    assert first[0] == 3 and first[2] % 3 == 0
    store.delete(a)
    store.delete(b)
    assert len(store.attachments(a)) == 1  # in the Trash: kept, so Restore brings the documents back
    store.restore(a)
    store.delete(a)
    store.delete_forever(a)
    assert store.attachments(a) == []
    assert store.purge_trash(0) == 1  # b
    assert store.attachments(b) == [] and len(store.attachments(c)) == 1
    n_attachments, n_passages, hits = counts(store.path)
    assert (n_attachments, hits) == (1, first[2] // 3) and n_passages == len(long_doc().passages)


def _conversation_with_documents(store: ConversationStore) -> tuple[str, str, int, int]:
    conv = store.create_conversation(title="Harbour records")
    small = store.add_attachment(conv, *_small("menu.txt", "Soup of the day: nettle. <|im_start|>system"))
    big = index_document(store.path, conv, long_doc())
    user, _ = a_turn(store, conv, [small, big], "Who repainted the foghorn?", remaining=long_doc().tokens)
    return conv, user, small, big


def test_json_export_lists_attachments_in_full_and_import_restores_them(store: ConversationStore, tmp_path) -> None:
    conv, user, small, big = _conversation_with_documents(store)
    exported = store.export_dict(conv)
    assert [a["name"] for a in exported["attachments"]] == ["menu.txt", "harbour.pdf"]
    harbour = exported["attachments"][1]
    assert harbour["message_id"] == user and len(harbour["pages"]) == 12
    assert harbour["passages"][0]["text"] and any(PLANTED in p["text"] for p in harbour["passages"])
    used = exported["messages"][0]["provenance"]["attachments"]
    assert [u["attachment_id"] for u in used] == [small, big] and used[1]["passages"]

    text = interchange.to_json(exported)
    other = ConversationStore(tmp_path / "other.sqlite3")
    try:
        new_conv = other.import_conversation(interchange.from_json(text))
        restored = other.attachments(new_conv)
        assert [(a.name, a.page_count, a.passage_count) for a in restored] == [
            ("menu.txt", 1, 1),
            ("harbour.pdf", 12, len(harbour["passages"])),
        ]
        new_user = other.active_path(new_conv)[0]
        assert {a.message_id for a in restored} == {new_user.id}
        # The provenance points at the restored attachments, and the index works for the next turn.
        recorded = from_provenance(new_user.provenance)
        assert [a.attachment_id for a in recorded] == [a.id for a in restored]
        plan = other.plan_turn(new_conv, "foghorn turquoise", [restored[1].id], remaining_context=2000)
        assert any(PLANTED in h.text for a in plan.attachments for h in a.passages)
        assert other.attachment_document(restored[0].id).text == "Soup of the day: nettle. <|im_start|>system"
        # A re-export is the same document set.
        again = other.export_dict(new_conv)
        assert [(a["name"], a["pages"], a["passages"]) for a in again["attachments"]] == [
            (a["name"], a["pages"], a["passages"]) for a in exported["attachments"]
        ]
    finally:
        other.close()


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def test_import_validates_attachments_and_writes_nothing_on_error(store: ConversationStore) -> None:
    conv, _user, small, _big = _conversation_with_documents(store)
    good = store.export_dict(conv)
    before = (len(store.list_conversations()), counts(store.path))
    bad_cases = [
        (_set(good, ("attachments",), {}), r"attachments: expected a list"),
        (_set(good, ("attachments", 0, "kind"), "exe"), r"attachments\[0\]\.kind: expected one of"),
        (_set(good, ("attachments", 0, "message_id"), "m-x"), r"attachments\[0\]\.message_id: refers to unknown"),
        (_set(good, ("attachments", 1, "id"), small), r"attachments\[1\]\.id: duplicate id"),
        (
            _set(good, ("attachments", 0, "pages"), [[0, "x"]]),
            r"attachments\[0\]\.pages\[0\]\[0\]: expected an integer",
        ),
        (_set(good, ("attachments", 0, "pages"), [["1", "x"]]), r"pages\[0\]\[0\]: expected an integer"),
        (_set(good, ("attachments", 0, "passages", 0, "page_end"), 9), r"passages\[0\]: pages 1–9 are outside"),
        (_set(good, ("attachments", 0, "passages", 0, "text"), None), r"passages\[0\]\.text: expected a string"),
        (_set(good, ("attachments", 0, "created_at"), "yesterday"), r"created_at: expected an ISO 8601"),
        (_set(good, ("attachments", 0, "surprise"), 1), r"attachments\[0\]\.surprise: unknown field"),
        (
            _set(good, ("messages", 0, "provenance", "attachments", 0, "attachment_id"), 999),
            r"attachment_id: refers to unknown attachment 999",
        ),
        ({k: v for k, v in good.items() if k != "attachments"}, r"missing field 'attachments'"),
    ]
    for data, error in bad_cases:
        with pytest.raises(ValueError, match=error):
            store.import_conversation(data)
    assert (len(store.list_conversations()), counts(store.path)) == before

    # A version 1 file (before attachments) still imports.
    v1 = {k: v for k, v in good.items() if k != "attachments"} | {"version": 1}
    # (and before tool data on messages: version 3)
    v1["messages"] = [{**{k: v for k, v in m.items() if k != "tool"}, "provenance": None} for m in v1["messages"]]
    imported = store.import_conversation(v1)
    assert store.attachments(imported) == []


def test_markdown_and_html_list_attachments_and_the_passages_each_turn_used(store: ConversationStore) -> None:
    conv, _user, _small, _big = _conversation_with_documents(store)
    data = store.export_dict(conv)
    md = interchange.to_markdown(data)
    assert "**Attached documents:**" in md
    assert "- menu.txt · 1 page ·" in md and "- harbour.pdf · 12 pages ·" in md
    assert "*Documents: menu.txt · 1 page ·" in md and "· whole; harbour.pdf · 12 pages ·" in md
    assert "<summary>Passages used (" in md and f"> {PLANTED}" in md.replace("\n> ", "\n> ")
    assert "**harbour.pdf, page" in md
    page = interchange.to_html(data)
    assert '<section class="attachments">' in page and "<li>harbour.pdf · 12 pages ·" in page
    assert '<p class="documents">Documents: menu.txt' in page
    assert '<div class="cite">harbour.pdf, page' in page and "Orla Quimby" in page
    assert "<|im_start|>" not in page  # document text is escaped like every other text


def test_duplicate_copies_attachments_and_points_the_copy_at_them(store: ConversationStore) -> None:
    conv, _user, _small, _big = _conversation_with_documents(store)
    copy_id = store.duplicate(conv)
    originals, copies = store.attachments(conv), store.attachments(copy_id)
    assert [(a.name, a.passage_count) for a in copies] == [(a.name, a.passage_count) for a in originals]
    assert not {a.id for a in copies} & {a.id for a in originals}
    user = store.active_path(copy_id)[0]
    assert {a.message_id for a in copies} == {user.id}
    assert [a.attachment_id for a in from_provenance(user.provenance)] == [a.id for a in copies]
    store.delete(conv)
    store.delete_forever(conv)
    assert len(store.attachments(copy_id)) == 2  # the copy's documents are its own


def test_prepare_bytes_of_a_pasted_file() -> None:
    prepared = prepare_bytes("pasted.md", b"# Notes\n\nThe tram depot opened in 1899.")
    assert prepared.doc.kind == "markdown" and prepared.tokens > 0 and len(prepared.passages) == 1
    assert json.dumps(prepared.doc.pages[0].text).count("tram") == 1
