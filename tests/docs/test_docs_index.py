"""The SQLite attachment store and FTS5 index: round trips, per-conversation search, deletes, the store
migration's cascade, atomic writes, and a search that never raises on what a person types."""

from __future__ import annotations

import random
import sqlite3
import string

import pytest

from olmo3.docs import index
from olmo3.docs.chunk import chunk
from olmo3.docs.extract import Document, Page, extract
from olmo3.docs.minipdf import write_pdf


def make_doc(name: str, pages: list[str]) -> Document:
    return Document(name, "pdf", 100, "ab" * 32, tuple(Page(i + 1, t) for i, t in enumerate(pages)))


@pytest.fixture
def conn(tmp_path):
    c = sqlite3.connect(tmp_path / "docs.sqlite3")
    index.ensure_schema(c)
    yield c
    c.close()


def fts_ok(conn: sqlite3.Connection) -> None:
    """FTS5's own check that the index matches the passages table (raises if not)."""
    conn.execute("INSERT INTO passages_fts(passages_fts) VALUES ('integrity-check')")


def test_schema_is_idempotent_and_self_contained(tmp_path):
    c = sqlite3.connect(tmp_path / "a.sqlite3")
    for _ in range(3):
        index.ensure_schema(c)
    names = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
    assert {"attachments", "passages", "passages_fts", "attachments_delete_passages"} <= names
    assert not c.in_transaction  # it committed


def test_round_trip_search_and_delete(conn, tmp_path):
    a = make_doc("harbour.pdf", ["The tide gauge was repaired in 1901.", "Nothing here but grain and rope."])
    b = make_doc("mill.txt", ["The mill owner bought a new water wheel."])
    ia = index.add_document(conn, "conv-1", a, chunk(a, target=8, overlap=0))
    ib = index.add_document(conn, "conv-1", b, chunk(b, target=512), tokens=11, message_id="m1")
    other = index.add_document(conn, "conv-2", a, chunk(a, target=8, overlap=0))
    fts_ok(conn)

    hits = index.search(conn, "conv-1", "When was the tide gauge repaired?", 3)
    assert hits[0].name == "harbour.pdf" and hits[0].page_label == "page 1" and hits[0].attachment_id == ia
    assert "tide gauge was repaired" in hits[0].text and hits[0].score > 0
    assert all(h.attachment_id != other for h in index.search(conn, "conv-1", "tide gauge grain rope mill", 10))
    assert index.search(conn, "conv-1", "water wheels", 3)[0].attachment_id == ib  # porter: wheels -> wheel
    assert index.search(conn, "conv-1", "tide gauge", 3, attachment_ids=[ib]) == []
    assert index.search(conn, "conv-1", "tide gauge", 3, attachment_ids=[]) == []
    assert index.search(conn, "conv-3", "tide gauge", 3) == []

    listed = index.list_attachments(conn, "conv-1")
    assert [(x.id, x.name, x.page_count, x.message_id) for x in listed] == [
        (ia, "harbour.pdf", 2, None),
        (ib, "mill.txt", 1, "m1"),
    ]
    assert listed[1].tokens == 11 and listed[0].passage_count == len(chunk(a, target=8, overlap=0))
    assert index.load_document(conn, ia) == a

    index.delete_attachment(conn, ib)
    assert [x.id for x in index.list_attachments(conn, "conv-1")] == [ia]
    assert index.delete_for_conversation(conn, "conv-1") == 1
    fts_ok(conn)
    assert index.list_attachments(conn, "conv-1") == [] and index.search(conn, "conv-1", "tide", 5) == []
    assert conn.execute("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH 'tide'").fetchone()[0] == 1
    assert [h.attachment_id for h in index.search(conn, "conv-2", "tide gauge", 5)] == [other]
    with pytest.raises(LookupError):
        index.load_document(conn, ia)


def test_text_survives_the_original_file(conn, tmp_path):
    path = write_pdf(tmp_path / "gone.pdf", [["The swing bridge opened in 1888."], ["Page two."]])
    doc = extract(path)
    aid = index.add_document(conn, "c", doc, chunk(doc))
    path.unlink()
    assert index.load_document(conn, aid) == doc
    assert "swing bridge" in index.search(conn, "c", "swing bridge", 1)[0].text


def test_add_document_is_atomic(conn):
    doc = make_doc("a.pdf", ["One. Two."])
    passages = chunk(doc, target=512)
    with pytest.raises(sqlite3.IntegrityError):
        index.add_document(conn, "c", doc, passages + passages)  # duplicate ordinals
    assert conn.execute("SELECT count(*) FROM attachments").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM passages").fetchone()[0] == 0
    fts_ok(conn)


def test_inside_a_callers_transaction_nothing_is_committed_early(tmp_path):
    c = sqlite3.connect(tmp_path / "t.sqlite3", isolation_level=None)
    index.ensure_schema(c)
    doc = make_doc("a.pdf", ["Some text."])
    c.execute("BEGIN IMMEDIATE")
    index.add_document(c, "c", doc, chunk(doc))
    c.execute("ROLLBACK")
    assert c.execute("SELECT count(*) FROM attachments").fetchone()[0] == 0


def test_store_migration_cascades_from_conversations(tmp_path):
    c = sqlite3.connect(tmp_path / "store.sqlite3", isolation_level=None)
    c.execute("PRAGMA foreign_keys = ON")
    c.execute("CREATE TABLE conversations (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE)")
    c.execute("BEGIN")
    for statement in index.STORE_MIGRATION:  # as the store's migration will run them
        c.execute(statement)
    c.execute("COMMIT")
    c.execute("INSERT INTO conversations (id) VALUES ('keep'), ('drop')")
    doc = make_doc("a.pdf", ["The pumping station flooded.", "The ice house was closed."])
    index.add_document(c, "keep", doc, chunk(doc, target=6, overlap=0))
    index.add_document(c, "drop", doc, chunk(doc, target=6, overlap=0))
    with pytest.raises(sqlite3.IntegrityError):  # no attachments for a conversation that does not exist
        index.add_document(c, "nobody", doc, [])
    c.execute("DELETE FROM conversations WHERE id = 'drop'")  # what the store's delete does
    fts_ok(c)
    assert [x.conversation_id for x in index.list_attachments(c, "keep")] == ["keep"]
    assert index.list_attachments(c, "drop") == []
    assert c.execute("SELECT count(*) FROM passages").fetchone()[0] == 2
    assert c.execute("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH 'pumping'").fetchone()[0] == 1


def test_match_queries_are_plain_terms():
    assert index.build_match_query('What is "NEAR(a b)" AND col:xy* OR -y?') == '"near" OR "col" OR "xy"'
    assert index.build_match_query("the of and to") is None
    assert index.build_match_query("!!! ??? ...") is None
    assert index.build_match_query("東京 について") == '"東京" OR "について"'
    assert index.build_match_query("snake_case Café") == '"snake" OR "case" OR "café"'
    assert len(index.query_terms(" ".join(f"w{i}" for i in range(500)))) == index.MAX_TERMS


def random_query(rng: random.Random) -> str:
    alphabet = (
        string.printable
        + '"""***(((:::^^^---+++{}[]'
        + "\x00\x01\x7f\u0301\u200b\u3000東京ßÆ🙂\ufeff"
        + "\ud800\udfff"  # lone surrogates: not even valid UTF-8
    )
    words = ["AND", "OR", "NOT", "NEAR", "NEAR(", "col:", "rank", "bm25", "MATCH", "'", '"', "*", "^", "tide", "gauge"]
    parts = [rng.choice(words) if rng.random() < 0.3 else "".join(rng.choices(alphabet, k=rng.randint(0, 12)))]
    for _ in range(rng.randint(0, 8)):
        parts.append(rng.choice(words) if rng.random() < 0.3 else "".join(rng.choices(alphabet, k=rng.randint(0, 12))))
    return rng.choice([" ", "", "\n"]).join(parts)


def test_search_never_raises_on_random_input(conn):
    rng = random.Random(2024)
    doc = make_doc("a.pdf", ["The tide gauge and the NEAR quay. Column: rank * 2 (bm25)."] * 3)
    index.add_document(conn, "c", doc, chunk(doc, target=10, overlap=2))
    queries = [random_query(rng) for _ in range(500)]
    queries += ["", " ", '"', '""', "*", "(", ")", "NEAR(", "a" * 100_000, "tide " * 5000, "\x00", "\ud800"]
    found = 0
    for q in queries:
        for k in (0, 1, 5, 10**9, -1):
            hits = index.search(conn, "c", q, k)
            assert isinstance(hits, list) and len(hits) <= max(0, min(k, index.MAX_K))
            found += bool(hits)
    assert found > 0  # the fuzz does reach real searches


def test_common_terms_do_not_outweigh_rare_ones(conn):
    # 'harbour' is in every passage (BM25 weight ~0); the rare words decide the order.
    pages = [f"The harbour master wrote report {i} about ropes." for i in range(30)]
    pages[17] = "The harbour master counted 4,217 gulls on the breakwater."
    doc = make_doc("log.pdf", pages)
    index.add_document(conn, "c", doc, chunk(doc, target=12, overlap=0))
    hits = index.search(conn, "c", "How many gulls did the harbour master count on the breakwater?", 3)
    assert hits[0].page_start == 18
    assert index.search(conn, "c", "harbour", 3)  # only common terms: still an answer (the rarest kept)


def test_store_migration_on_the_real_conversation_store(tmp_path):
    """The statements of STORE_MIGRATION on a real store file: deleting a conversation for good takes its
    attachments, passages and index entries with it, in the store's own transaction."""
    from olmo3.store import ConversationStore

    path = tmp_path / "conversations.sqlite3"
    store = ConversationStore(path)
    keep, drop = store.create_conversation(title="keep"), store.create_conversation(title="drop")
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA foreign_keys = ON")
    c.execute("BEGIN IMMEDIATE")
    for statement in index.STORE_MIGRATION:
        c.execute(statement)
    c.execute("COMMIT")
    doc = make_doc("minutes.pdf", ["The bandstand was painted in 1920.", "The toll house was closed."])
    for conv in (keep, drop):
        index.add_document(c, conv, doc, chunk(doc, target=6, overlap=0))
    store.delete(drop)
    assert len(index.list_attachments(c, drop)) == 1  # in the trash, a conversation keeps its documents
    store.delete_forever(drop)
    store.close()
    fts_ok(c)
    assert index.list_attachments(c, drop) == [] and len(index.list_attachments(c, keep)) == 1
    assert [h.name for h in index.search(c, keep, "bandstand painted", 3)] == ["minutes.pdf"]
    assert c.execute("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH 'bandstand'").fetchone()[0] == 1
