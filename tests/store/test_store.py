"""Tests for olmo3.store: tree, streaming, trash, search, migrations, sessions (real SQLite files)."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from olmo3.store import (
    CURRENT_VERSION,
    DEFAULT_TITLE,
    MATCH_END,
    MATCH_START,
    MIGRATIONS,
    ConversationStore,
    NotFoundError,
    StoreError,
    build_fts_query,
    make_title,
    snippet_to_html,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "conversations.sqlite3"


@pytest.fixture
def store(db: Path):
    s = ConversationStore(db)
    yield s
    s.close()


def raw(db: Path) -> sqlite3.Connection:
    """An independent connection, to see what is really committed on disk."""
    return sqlite3.connect(db)


def fts_ok(conn: sqlite3.Connection) -> None:
    """FTS5 'integrity-check' on external-content tables compares the index with the rows."""
    conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
    conn.execute("INSERT INTO conversations_fts(conversations_fts) VALUES ('integrity-check')")
    conn.execute("INSERT INTO passages_fts(passages_fts) VALUES ('integrity-check')")


def db_ok(db: Path) -> None:
    with raw(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        fts_ok(conn)
    conn.close()


# ---- titles and basic conversation fields ----------------------------------------------------


def test_make_title_cuts_on_word_boundary() -> None:
    assert make_title("  Hello   there\n world ") == "Hello there world"
    assert make_title("") == DEFAULT_TITLE
    long = "Explain the difference between quantum entanglement and classical correlation in detail please"
    title = make_title(long)
    assert title.endswith("…") and len(title) <= 61
    assert long.startswith(title[:-1])
    assert long[len(title) - 1] == " "  # the cut is at a space
    assert make_title("x" * 200) == "x" * 60 + "…"  # one giant word: hard cut


def test_create_and_fields(store: ConversationStore) -> None:
    cid = store.create_conversation(
        model_id="allenai/Olmo-3-7B-Instruct",
        model_revision="abc123",
        system_prompt=None,
        sampling={"temperature": 0.6, "top_p": 0.95},
        folder=" Work ",
    )
    conv = store.get_conversation(cid)
    assert conv.title == DEFAULT_TITLE and conv.title_is_auto
    assert conv.model_id == "allenai/Olmo-3-7B-Instruct" and conv.model_revision == "abc123"
    assert conv.system_prompt is None
    assert conv.sampling == {"temperature": 0.6, "top_p": 0.95}
    assert conv.folder == "Work" and not conv.pinned and conv.deleted_at is None
    store.update_settings(cid, system_prompt="Be terse.", sampling={"temperature": 0.0})
    conv = store.get_conversation(cid)
    assert conv.system_prompt == "Be terse." and conv.sampling == {"temperature": 0.0}
    assert conv.model_id == "allenai/Olmo-3-7B-Instruct"  # untouched fields stay
    with pytest.raises(ValueError, match="sampling"):
        store.update_settings(cid, sampling={"t": float("nan")})
    with pytest.raises(NotFoundError):
        store.get_conversation("nope")


def test_auto_title_and_sticky_rename(store: ConversationStore) -> None:
    cid = store.create_conversation()
    first = "How do I bake sourdough bread at home without a proofing basket or a dutch oven?"
    u1 = store.append_message(cid, None, "user", first)
    assert store.get_conversation(cid).title == make_title(first)
    a1 = store.append_message(cid, u1, "assistant", "Like this.")
    store.append_message(cid, a1, "user", "And rye?")  # not the first user message
    assert store.get_conversation(cid).title == make_title(first)
    # Editing the first message (a new root) renames an auto-titled conversation.
    store.append_message(cid, None, "user", "Sourdough with rye")
    assert store.get_conversation(cid).title == "Sourdough with rye"
    store.rename(cid, "  My   bread  ")
    conv = store.get_conversation(cid)
    assert conv.title == "My bread" and not conv.title_is_auto
    store.append_message(cid, None, "user", "Another edit of the first message")
    assert store.get_conversation(cid).title == "My bread"  # the rename sticks
    store.rename(cid, None)  # back to automatic
    conv = store.get_conversation(cid)
    assert conv.title_is_auto and conv.title == "Another edit of the first message"


def test_list_order_pins_and_folders(store: ConversationStore) -> None:
    a = store.create_conversation(title="a", folder="Work")
    b = store.create_conversation(title="b")
    c = store.create_conversation(title="c", folder="Work")
    store.append_message(a, None, "user", "bump a")  # a is now the most recent
    assert [x.id for x in store.list_conversations()] == [a, c, b]
    store.pin(b)
    assert [x.id for x in store.list_conversations()] == [b, a, c]
    assert [x.id for x in store.list_conversations(folder="Work")] == [a, c]
    assert store.list_folders() == ["Work"]
    store.unpin(b)
    store.set_folder(c, None)
    assert [x.id for x in store.list_conversations()] == [a, c, b]
    assert [x.id for x in store.list_conversations(folder="Work")] == [a]
    assert store.get_conversation(b).pinned is False


# ---- message tree ----------------------------------------------------------------------------


def test_tree_branches_and_active_path(store: ConversationStore, db: Path) -> None:
    cid = store.create_conversation()
    u1 = store.append_message(cid, None, "user", "Hi")
    a1 = store.append_message(
        cid, u1, "assistant", "Hello!", token_ids=[1, 2, 3], stats={"tokens": 3}, provenance={"seed": 7}
    )
    u2 = store.append_message(cid, a1, "user", "Tell a joke")
    j1 = store.append_message(cid, u2, "assistant", "Joke one")
    j2 = store.append_message(cid, u2, "assistant", "Joke two")  # regenerate
    assert [m.content for m in store.active_path(cid)] == ["Hi", "Hello!", "Tell a joke", "Joke two"]
    path = store.active_path(cid)
    assert (path[-1].sibling_index, path[-1].sibling_count) == (1, 2)
    assert (path[0].sibling_index, path[0].sibling_count) == (0, 1)
    assert path[1].token_ids == [1, 2, 3] and path[1].stats == {"tokens": 3}
    assert path[1].provenance == {"seed": 7} and path[1].state == "complete"
    assert [m.id for m in store.siblings(j1)] == [j1, j2]

    # Edit the second user message: a sibling of u2 with its own reply.
    e2 = store.append_message(cid, a1, "user", "Tell a pun")
    p1 = store.append_message(cid, e2, "assistant", "Pun one")
    assert [m.content for m in store.active_path(cid)][-2:] == ["Tell a pun", "Pun one"]

    # Switching back to u2 restores the reply shown there before (Joke two).
    store.set_active(u2)
    assert [m.content for m in store.active_path(cid)][-2:] == ["Tell a joke", "Joke two"]
    # Activating a deep message activates its ancestors too.
    store.set_active(j1)
    assert [m.id for m in store.active_path(cid)] == [u1, a1, u2, j1]
    store.set_active(p1)
    assert [m.id for m in store.active_path(cid)] == [u1, a1, e2, p1]
    assert store.switch_branch(e2, -1) == u2
    assert store.switch_branch(u2, -5) == u2  # clamps
    assert store.active_leaf(cid).id == j1

    tree = store.tree(cid)
    assert [m.id for m in tree] == [u1, a1, u2, j1, j2, e2, p1]
    assert {m.id for m in store.children(a1)} == {u2, e2}
    assert [m.id for m in store.children(None, cid)] == [u1]
    # Exactly one active message per sibling group, always.
    groups: dict[str | None, int] = {}
    for m in tree:
        groups[m.parent_id] = groups.get(m.parent_id, 0) + m.active
    assert set(groups.values()) == {1}
    db_ok(db)


def test_append_rejects_bad_input(store: ConversationStore) -> None:
    c1 = store.create_conversation()
    c2 = store.create_conversation()
    m1 = store.append_message(c1, None, "user", "x")
    with pytest.raises(ValueError, match="another conversation"):
        store.append_message(c2, m1, "assistant", "y")
    with pytest.raises(NotFoundError):
        store.append_message(c1, "missing", "assistant", "y")
    with pytest.raises(NotFoundError):
        store.append_message("missing", None, "user", "y")
    with pytest.raises(ValueError, match="role"):
        store.append_message(c1, m1, "robot", "y")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"token_ids\[1\]"):
        store.append_message(c1, m1, "assistant", "y", token_ids=[1, -2])
    with pytest.raises(ValueError, match="stats"):
        store.append_message(c1, m1, "assistant", "y", stats=[1])  # type: ignore[arg-type]
    # Nothing half-written by the failures above.
    assert [m.id for m in store.tree(c1)] == [m1]
    assert store.tree(c2) == []


# ---- streaming -------------------------------------------------------------------------------


def committed(db: Path, message_id: str) -> tuple[str, str, str]:
    conn = raw(db)
    try:
        return conn.execute("SELECT content, reasoning, state FROM messages WHERE id = ?", (message_id,)).fetchone()
    finally:
        conn.close()


def test_stream_buffers_until_flush(db: Path) -> None:
    with ConversationStore(db, flush_interval=3600) as store:
        cid = store.create_conversation()
        u = store.append_message(cid, None, "user", "Count")
        mid = store.begin_stream(cid, u, provenance={"seed": 1, "template_sha256": "ab"})
        # The row exists (and is visible to other connections) from the start.
        assert committed(db, mid) == ("", "", "streaming")
        store.stream_append(mid, "hmm ", channel="reasoning")
        store.stream_append(mid, "one ")
        store.stream_append(mid, "two ")
        assert committed(db, mid) == ("", "", "streaming")  # buffered (interval not reached)
        # Reads through the store include the buffered text.
        msg = store.get_message(mid)
        assert (msg.content, msg.reasoning, msg.state) == ("one two ", "hmm ", "streaming")
        store.flush()
        assert committed(db, mid) == ("one two ", "hmm ", "streaming")
        store.stream_append(mid, "three")
        store.finish_stream(mid, token_ids=[5, 6, 7], stats={"ttft_s": 0.1, "tokens": 3})
        assert committed(db, mid) == ("one two three", "hmm ", "complete")
        msg = store.get_message(mid)
        assert msg.token_ids == [5, 6, 7] and msg.stats == {"ttft_s": 0.1, "tokens": 3}
        assert msg.provenance == {"seed": 1, "template_sha256": "ab"}
        with pytest.raises(ValueError, match="not being streamed"):
            store.stream_append(mid, "late")
        with pytest.raises(ValueError, match="not being streamed"):
            store.finish_stream(mid)


def test_stream_commits_when_interval_elapsed(db: Path) -> None:
    # flush_interval=0: every append finds the interval elapsed, so each one commits.
    with ConversationStore(db, flush_interval=0) as store:
        cid = store.create_conversation()
        mid = store.begin_stream(cid, None)
        store.stream_append(mid, "a")
        assert committed(db, mid)[0] == "a"
        store.stream_append(mid, "b", channel="reasoning")
        assert committed(db, mid)[:2] == ("a", "b")
        with pytest.raises(ValueError, match="channel"):
            store.stream_append(mid, "x", channel="other")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="state"):
            store.finish_stream(mid, state="streaming")  # type: ignore[arg-type]
        store.finish_stream(mid, state="error", stats={"error": "out of memory"})
        assert committed(db, mid) == ("a", "b", "error")


def test_flush_due_commits_paused_streams(db: Path) -> None:
    with ConversationStore(db, flush_interval=0) as store:
        cid = store.create_conversation()
        mid = store.begin_stream(cid, None)
        store.flush_interval = 3600
        store.stream_append(mid, "held")
        assert store.flush_due() == 0 and committed(db, mid)[0] == ""
        store.flush_interval = 0  # the GUI's timer fires after the interval
        assert store.flush_due() == 1 and committed(db, mid)[0] == "held"
        assert store.flush_due() == 0  # nothing pending


def test_close_finishes_open_streams_as_interrupted(db: Path) -> None:
    store = ConversationStore(db, flush_interval=3600)
    cid = store.create_conversation()
    mid = store.begin_stream(cid, None)
    store.stream_append(mid, "partial answer")
    store.close()
    assert committed(db, mid) == ("partial answer", "", "interrupted")


def test_streaming_rows_of_dead_sessions_become_interrupted(db: Path) -> None:
    with ConversationStore(db) as store:
        cid = store.create_conversation()
        u = store.append_message(cid, None, "user", "q")
    conn = raw(db)
    with conn:  # rows left 'streaming' by a crash: no owner (old schema) and a dead owner
        for i, owner in enumerate([None, "deadbeef" * 4]):
            conn.execute(
                "INSERT INTO messages (id, conversation_id, parent_id, role, content, state, "
                "created_at, active, stream_owner) VALUES (?, ?, ?, 'assistant', ?, 'streaming', ?, ?, ?)",
                (f"m{i}", cid, u, f"half {i}", time.time(), i, owner),
            )
    conn.close()
    with ConversationStore(db) as store:
        for i in range(2):
            msg = store.get_message(f"m{i}")
            assert msg.state == "interrupted" and msg.content == f"half {i}"
    db_ok(db)


def test_second_store_in_another_thread_keeps_live_stream(db: Path) -> None:
    store = ConversationStore(db, flush_interval=0)
    cid = store.create_conversation()
    mid = store.begin_stream(cid, None)
    store.stream_append(mid, "first ")
    seen: dict[str, object] = {}

    def other_thread() -> None:
        try:
            with ConversationStore(db) as other:  # opening must not interrupt the live stream
                seen["state"] = other.get_message(mid).state
                other_cid = other.create_conversation(title="from thread")
                other.append_message(other_cid, None, "user", "hello from the thread")
                seen["cid"] = other_cid
        except Exception as exc:  # pragma: no cover - reported below
            seen["error"] = exc

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert "error" not in seen, seen
    assert seen["state"] == "streaming"
    store.stream_append(mid, "second")
    store.finish_stream(mid)
    assert store.get_message(mid).content == "first second"
    assert store.get_message(mid).state == "complete"
    assert store.get_conversation(seen["cid"]).title == "from thread"  # type: ignore[arg-type]

    # A store object is bound to its thread.
    errors: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(errors, store.list_conversations))
    t.start()
    t.join()
    assert errors and isinstance(errors[0], sqlite3.ProgrammingError)
    store.close()


def _catch(errors: list[BaseException], fn) -> None:
    try:
        fn()
    except BaseException as exc:
        errors.append(exc)


def test_concurrent_writers_in_two_threads(db: Path) -> None:
    ConversationStore(db).close()  # create the file first
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            with ConversationStore(db) as s:
                cid = s.create_conversation(title=tag)
                parent = None
                barrier.wait()
                for i in range(40):
                    parent = s.append_message(cid, parent, "user", f"{tag} {i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in ("left", "right")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with ConversationStore(db) as s:
        for conv in s.list_conversations():
            assert [m.content for m in s.active_path(conv.id)] == [f"{conv.title} {i}" for i in range(40)]
    db_ok(db)


# ---- engine state, duplicate -----------------------------------------------------------------


def test_engine_state_round_trip(store: ConversationStore) -> None:
    cid = store.create_conversation()
    assert store.get_engine_state(cid) is None
    state = {"v": 1, "transcript": [100257, 882, 198], "branches": {"x": [1, 2]}, "name": "çà"}
    store.set_engine_state(cid, state)
    assert store.get_engine_state(cid) == state
    store.set_engine_state(cid, None)
    assert store.get_engine_state(cid) is None
    with pytest.raises(ValueError, match="engine_state"):
        store.set_engine_state(cid, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="engine_state"):
        store.set_engine_state(cid, {"x": float("inf")})
    with pytest.raises(NotFoundError):
        store.set_engine_state("nope", {})


def test_duplicate_is_a_deep_independent_copy(store: ConversationStore, db: Path) -> None:
    cid = store.create_conversation(model_id="m", sampling={"temperature": 0.2}, folder="F")
    u = store.append_message(cid, None, "user", "root")
    a1 = store.append_message(cid, u, "assistant", "first", token_ids=[1, 2])
    a2 = store.append_message(cid, u, "assistant", "second", reasoning="because")
    store.set_active(a1)
    store.set_engine_state(cid, {"leaf": a1, "nodes": {u: [1], a2: [2]}, "text": f"see {a1}"})
    store.pin(cid)

    copy = store.duplicate(cid)
    assert copy != cid
    conv = store.get_conversation(copy)
    assert conv.title.endswith("(copy)") and not conv.pinned and conv.folder == "F"
    assert conv.sampling == {"temperature": 0.2}
    old, new = store.tree(cid), store.tree(copy)
    assert [(m.role, m.content, m.reasoning, m.token_ids, m.active) for m in old] == [
        (m.role, m.content, m.reasoning, m.token_ids, m.active) for m in new
    ]
    assert not {m.id for m in old} & {m.id for m in new}
    assert [m.content for m in store.active_path(copy)] == ["root", "first"]
    # Engine state follows the new ids (exact matches only; substrings are left alone).
    new_ids = {m.content: m.id for m in new}
    state = store.get_engine_state(copy)
    assert state["leaf"] == new_ids["first"]
    assert set(state["nodes"]) == {new_ids["root"], new_ids["second"]}
    assert state["text"] == f"see {a1}"
    # Independent: growing the copy leaves the original alone.
    store.append_message(copy, new_ids["first"], "user", "only in the copy")
    assert len(store.tree(cid)) == 3
    db_ok(db)


# ---- trash -----------------------------------------------------------------------------------


def test_trash_restore_and_purge(db: Path) -> None:
    with ConversationStore(db) as store:
        keep = store.create_conversation(title="keep")
        gone = store.create_conversation(title="gone")
        store.append_message(gone, None, "user", "trashable words")
        store.delete(gone)
        assert [c.id for c in store.list_conversations()] == [keep]
        assert [c.id for c in store.list_trash()] == [gone] and store.trash_count() == 1
        assert store.search("trashable") == []  # trashed conversations are not searched
        store.restore(gone)
        assert store.trash_count() == 0 and len(store.search("trashable")) == 1
        store.delete(gone)
        store.delete(gone)  # deleting twice is harmless
        deleted_at = store.get_conversation(gone).deleted_at
        assert store.purge_trash(30, now=deleted_at + 29 * 86400) == 0
        assert store.purge_trash(30, now=deleted_at + 31 * 86400) == 1
        with pytest.raises(NotFoundError):
            store.get_conversation(gone)
        assert store.get_conversation(keep).title == "keep"
        with pytest.raises(ValueError, match="not in the trash"):
            store.delete_forever(keep)
        old = store.create_conversation(title="old")
        store.append_message(old, None, "user", "ancient")
        store.delete(old)
    conn = raw(db)
    with conn:  # pretend it was trashed 31 days ago
        conn.execute("UPDATE conversations SET deleted_at = ? WHERE id = ?", (time.time() - 31 * 86400, old))
    conn.close()
    with ConversationStore(db) as store:  # opening purges what is past retention
        assert store.list_trash() == []
        assert [c.id for c in store.list_conversations()] == [keep]
        n = store.create_conversation()
        store.delete(n)
        store.delete_forever(n)
        assert store.trash_count() == 0
    db_ok(db)
    conn = raw(db)
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0  # cascaded
    conn.close()


# ---- search ----------------------------------------------------------------------------------


@pytest.fixture
def searchable(store: ConversationStore) -> dict[str, str]:
    ids: dict[str, str] = {}
    c1 = store.create_conversation(title="Quantum entanglement basics")
    ids["c1"] = c1
    u = store.append_message(c1, None, "user", "What is a qubit?")
    ids["dense"] = store.append_message(c1, u, "assistant", "Kiwi kiwi kiwi: a kiwi fruit.")
    c2 = store.create_conversation(title="Cooking")
    ids["c2"] = c2
    u2 = store.append_message(c2, None, "user", "Un café crème, s'il vous plaît, and a naïve question")
    ids["cafe"] = u2
    filler = " ".join(["lorem ipsum dolor sit amet"] * 40)
    ids["sparse"] = store.append_message(
        c2, u2, "assistant", f"{filler} kiwi {filler}", reasoning="The user wants zabaglione."
    )
    return ids


def test_search_titles_contents_and_ranking(store: ConversationStore, searchable: dict[str, str]) -> None:
    hits = store.search("quantum")
    assert [(h.conv_id, h.message_id) for h in hits] == [(searchable["c1"], None)]
    assert hits[0].snippet == f"{MATCH_START}Quantum{MATCH_END} entanglement basics"
    assert hits[0].title == "Quantum entanglement basics"

    hits = store.search("kiwi")
    assert [h.message_id for h in hits] == [searchable["dense"], searchable["sparse"]]
    assert hits[0].rank < hits[1].rank
    assert f"{MATCH_START}kiwi{MATCH_END}" in hits[1].snippet
    assert len(hits[1].snippet) < 300  # a snippet, not the whole 2,000-character message

    hits = store.search("zabaglione")  # reasoning is searched too
    assert [h.message_id for h in hits] == [searchable["sparse"]]
    assert hits[0].title == "Cooking"

    assert store.search("qubit kiwi") == []  # terms are ANDed within a message
    assert [h.message_id for h in store.search("qubit")] == [store.tree(searchable["c1"])[0].id]


def test_search_diacritics_and_prefix(store: ConversationStore, searchable: dict[str, str]) -> None:
    for query in ("cafe", "CAFÉ", "creme", "naive", "naïve", "plait"):
        assert [h.message_id for h in store.search(query)] == [searchable["cafe"]], query
    # As-you-type: the last term is a prefix while it is being typed...
    assert [h.conv_id for h in store.search("quant")] == [searchable["c1"]]
    assert [h.message_id for h in store.search("cafe cre")] == [searchable["cafe"]]
    # ...but not once a space ends it.
    assert store.search("quant ") == []
    assert store.search("   ") == [] and store.search("") == []


def test_search_is_safe_against_fts_syntax(store: ConversationStore, searchable: dict[str, str]) -> None:
    assert build_fts_query("AND(") == '"AND(" *'
    assert build_fts_query('say "hi') == '"say" """hi" *'
    assert build_fts_query("*** ^ :") is None
    # FTS operators in the input are plain words.
    assert [h.message_id for h in store.search('"kiwi')] == [searchable["dense"], searchable["sparse"]]
    assert [h.message_id for h in store.search("naive AND(")] == [searchable["cafe"]]  # "and" is a word
    assert store.search("kiwi AND(") == []
    for query in [
        '"foo',
        "AND(",
        "NEAR(a b)",
        "title:quantum",
        "-kiwi",
        "a OR",
        "^kiwi",
        "*",
        "kiwi*",
        "(",
        ")",
        "'",
        "\\",
        "{x}",
        "c++",
        "NOT",
        "\x00",
        "😀 kiwi",
    ]:
        store.search(query)  # must not raise
    rng = random.Random(1234)
    alphabet = [*list("\"()*:^-+{}[],.'\\ ANDORNOTNEARkiwicafé😀"), "AND", "OR", "NOT", "NEAR"]
    for _ in range(400):
        query = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        assert isinstance(store.search(query), list)


def test_search_follows_edits_renames_and_deletes(store: ConversationStore, db: Path) -> None:
    cid = store.create_conversation()
    mid = store.begin_stream(cid, None)
    store.stream_append(mid, "photosynthesis in leaves")
    store.finish_stream(mid)
    assert [h.message_id for h in store.search("photosynthesis")] == [mid]
    store.rename(cid, "Botany notes")
    assert [h.conv_id for h in store.search("botany")] == [cid]
    store.rename(cid, "Zoology notes")
    assert store.search("botany") == []
    store.delete(cid)
    store.purge_trash(0)
    assert store.search("photosynthesis") == [] and store.search("zoology") == []
    db_ok(db)


def test_snippet_to_html_escapes_text() -> None:
    snippet = f"<b>x</b> & {MATCH_START}kiwi{MATCH_END}"
    assert snippet_to_html(snippet) == "&lt;b&gt;x&lt;/b&gt; &amp; <b>kiwi</b>"


# ---- bad files -------------------------------------------------------------------------------


def test_refuses_foreign_and_newer_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a conversation database"):
        ConversationStore(junk)
    assert junk.read_bytes() == b"this is not a database" * 100

    other = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a conversation store"):
        ConversationStore(other)

    future = tmp_path / "future.sqlite3"
    ConversationStore(future).close()
    conn = sqlite3.connect(future)
    conn.execute(f"PRAGMA user_version = {CURRENT_VERSION + 1}")
    conn.commit()
    conn.close()
    before = future.read_bytes()
    with pytest.raises(StoreError, match="newer Olmo Desktop"):
        ConversationStore(future)
    assert future.read_bytes() == before


def test_default_path_is_in_user_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    store = ConversationStore()
    try:
        assert store.path.name == "conversations.sqlite3"
        assert store.path.parent.name == "Olmo Desktop"
        assert store.path.exists() and str(store.path).startswith(str(tmp_path))
    finally:
        store.close()


# ---- migrations ------------------------------------------------------------------------------

# Frozen copies of the schemas as shipped. Building old databases from these (not from the
# store's own MIGRATIONS) makes the test fail if anyone edits a shipped migration.
FROZEN_V1 = [
    """CREATE TABLE conversations (
        seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, title TEXT NOT NULL DEFAULT '',
        model_id TEXT, system_prompt TEXT, sampling TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL, updated_at REAL NOT NULL, pinned INTEGER NOT NULL DEFAULT 0,
        deleted_at REAL)""",
    """CREATE TABLE messages (
        seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        parent_id TEXT REFERENCES messages(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL DEFAULT '', reasoning TEXT NOT NULL DEFAULT '', token_ids TEXT,
        stats TEXT,
        state TEXT NOT NULL DEFAULT 'complete'
            CHECK (state IN ('streaming', 'complete', 'interrupted', 'error')),
        created_at REAL NOT NULL, active INTEGER NOT NULL DEFAULT 1)""",
    "CREATE INDEX messages_by_conversation ON messages(conversation_id, seq)",
    "CREATE INDEX messages_by_parent ON messages(parent_id)",
    """CREATE UNIQUE INDEX messages_one_active_child
        ON messages(conversation_id, ifnull(parent_id, '')) WHERE active = 1""",
    "CREATE INDEX conversations_by_recency ON conversations(deleted_at, pinned, updated_at)",
    "PRAGMA user_version = 1",
]
FROZEN_V2 = [
    "ALTER TABLE conversations ADD COLUMN model_revision TEXT",
    "ALTER TABLE conversations ADD COLUMN folder TEXT",
    "ALTER TABLE conversations ADD COLUMN title_is_auto INTEGER NOT NULL DEFAULT 1",
    "UPDATE conversations SET title_is_auto = 0",
    "ALTER TABLE messages ADD COLUMN provenance TEXT",
    "CREATE INDEX conversations_by_folder ON conversations(folder)",
    "PRAGMA user_version = 2",
]
_FTS = "tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3'"
FROZEN_V3 = [
    "ALTER TABLE conversations ADD COLUMN engine_state TEXT",
    "ALTER TABLE messages ADD COLUMN stream_owner TEXT",
    f"""CREATE VIRTUAL TABLE conversations_fts USING fts5(
        title, content = 'conversations', content_rowid = 'seq', {_FTS})""",
    f"""CREATE VIRTUAL TABLE messages_fts USING fts5(
        content, reasoning, content = 'messages', content_rowid = 'seq', {_FTS})""",
    """CREATE TRIGGER conversations_fts_insert AFTER INSERT ON conversations BEGIN
        INSERT INTO conversations_fts(rowid, title) VALUES (new.seq, new.title); END""",
    """CREATE TRIGGER conversations_fts_delete AFTER DELETE ON conversations BEGIN
        INSERT INTO conversations_fts(conversations_fts, rowid, title) VALUES ('delete', old.seq, old.title); END""",
    """CREATE TRIGGER conversations_fts_update AFTER UPDATE OF title ON conversations BEGIN
        INSERT INTO conversations_fts(conversations_fts, rowid, title) VALUES ('delete', old.seq, old.title);
        INSERT INTO conversations_fts(rowid, title) VALUES (new.seq, new.title); END""",
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content, reasoning) VALUES (new.seq, new.content, new.reasoning); END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content, reasoning)
            VALUES ('delete', old.seq, old.content, old.reasoning); END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, reasoning ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content, reasoning)
            VALUES ('delete', old.seq, old.content, old.reasoning);
        INSERT INTO messages_fts(rowid, content, reasoning) VALUES (new.seq, new.content, new.reasoning); END""",
    "INSERT INTO conversations_fts(conversations_fts) VALUES ('rebuild')",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
    "PRAGMA user_version = 3",
]
FROZEN_V4 = [  # olmo3.docs.index.STORE_MIGRATION as shipped: attached documents
    """CREATE TABLE IF NOT EXISTS attachments (
        id INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        message_id TEXT, name TEXT NOT NULL, kind TEXT NOT NULL, size_bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL, encoding TEXT, page_count INTEGER NOT NULL, pages TEXT NOT NULL,
        tokens INTEGER NOT NULL, warnings TEXT NOT NULL DEFAULT '[]', created_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS attachments_by_conversation ON attachments(conversation_id, id)",
    """CREATE TABLE IF NOT EXISTS passages (
        id INTEGER PRIMARY KEY,
        attachment_id INTEGER NOT NULL REFERENCES attachments(id) ON DELETE CASCADE,
        ordinal INTEGER NOT NULL, page_start INTEGER NOT NULL, page_end INTEGER NOT NULL,
        tokens INTEGER NOT NULL, text TEXT NOT NULL, UNIQUE (attachment_id, ordinal))""",
    """CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(
        text, content = 'passages', content_rowid = 'id', tokenize = 'porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER IF NOT EXISTS passages_fts_insert AFTER INSERT ON passages BEGIN
        INSERT INTO passages_fts(rowid, text) VALUES (new.id, new.text); END""",
    """CREATE TRIGGER IF NOT EXISTS passages_fts_delete AFTER DELETE ON passages BEGIN
        INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', old.id, old.text); END""",
    """CREATE TRIGGER IF NOT EXISTS passages_fts_update AFTER UPDATE OF text ON passages BEGIN
        INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO passages_fts(rowid, text) VALUES (new.id, new.text); END""",
    """CREATE TRIGGER IF NOT EXISTS attachments_delete_passages AFTER DELETE ON attachments BEGIN
        DELETE FROM passages WHERE attachment_id = old.id; END""",
    "PRAGMA user_version = 4",
]
FROZEN = {
    1: FROZEN_V1,
    2: FROZEN_V1 + FROZEN_V2,
    3: FROZEN_V1 + FROZEN_V2 + FROZEN_V3,
    4: FROZEN_V1 + FROZEN_V2 + FROZEN_V3 + FROZEN_V4,
}

NOW = time.time()
OLD_CONVS = [  # seq, id, title, model_id, system_prompt, sampling, created, updated, pinned, deleted
    (1, "c-1", "Über Kaffee", "allenai/Olmo-3-7B-Think", None, '{"temperature":0.6}', NOW - 500, NOW - 100, 1, None),
    (2, "c-2", "Trashed but recent", None, "Be brief.", "{}", NOW - 400, NOW - 300, 0, NOW - 86400),
]
OLD_MSGS = [  # seq, id, conv, parent, role, content, reasoning, token_ids, stats, state, created, active
    (1, "m-1", "c-1", None, "user", "Wie macht man café crème?", "", None, None, "complete", NOW - 500, 1),
    (
        2,
        "m-2",
        "c-1",
        "m-1",
        "assistant",
        "Mit Milchschaum.",
        "Denken…",
        "[100257,882,198]",
        '{"tokens":3,"tok_s":41.5}',
        "complete",
        NOW - 490,
        0,
    ),
    (3, "m-3", "c-1", "m-1", "assistant", "Mit viel Milch.", "", "[1,2]", None, "complete", NOW - 480, 1),
    (4, "m-4", "c-1", "m-3", "user", "Und Zucker?", "", None, None, "complete", NOW - 470, 1),
    (5, "m-5", "c-1", "m-4", "assistant", "Halb geschrie", "", None, None, "streaming", NOW - 460, 1),
    (6, "m-6", "c-2", None, "user", "Quokka facts", "", None, None, "complete", NOW - 400, 1),
]


def build_old_db(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    for stmt in FROZEN[version]:
        conn.execute(stmt)
    conn.executemany(
        "INSERT INTO conversations (seq, id, title, model_id, system_prompt, sampling, created_at, "
        "updated_at, pinned, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        OLD_CONVS,
    )
    conn.executemany(
        "INSERT INTO messages (seq, id, conversation_id, parent_id, role, content, reasoning, "
        "token_ids, stats, state, created_at, active) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        OLD_MSGS,
    )
    if version >= 2:
        conn.execute(
            "UPDATE conversations SET model_revision = 'rev9', folder = 'Küche', title_is_auto = 1 WHERE id = 'c-1'"
        )
        conn.execute("""UPDATE messages SET provenance = '{"seed":42}' WHERE id = 'm-2'""")
    if version >= 3:
        conn.execute("""UPDATE conversations SET engine_state = '{"v":3}' WHERE id = 'c-2'""")
    conn.commit()
    conn.close()


def schema_of(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name").fetchall()
    return [
        (name, " ".join(sql.replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split())) for name, sql in rows
    ]


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_shipped_migrations_match_frozen_schemas(tmp_path: Path, version: int) -> None:
    frozen = sqlite3.connect(tmp_path / "frozen.sqlite3")
    for stmt in FROZEN[version]:
        frozen.execute(stmt)
    ours = sqlite3.connect(tmp_path / "ours.sqlite3")
    for migration in MIGRATIONS[:version]:
        migration.apply(ours)
    assert schema_of(ours) == schema_of(frozen)
    assert [m.version for m in MIGRATIONS] == list(range(1, CURRENT_VERSION + 1))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_migrates_old_database_with_data_intact(tmp_path: Path, version: int) -> None:
    path = tmp_path / "conversations.sqlite3"
    build_old_db(path, version)
    with ConversationStore(path) as store:
        assert store.schema_version == CURRENT_VERSION
        c1 = store.get_conversation("c-1")
        assert (c1.title, c1.model_id, c1.system_prompt, c1.sampling, c1.pinned) == (
            "Über Kaffee",
            "allenai/Olmo-3-7B-Think",
            None,
            {"temperature": 0.6},
            True,
        )
        assert (c1.created_at, c1.updated_at, c1.deleted_at) == (NOW - 500, NOW - 100, None)
        if version == 1:
            assert (c1.model_revision, c1.folder, c1.title_is_auto) == (None, None, False)
        else:
            assert (c1.model_revision, c1.folder, c1.title_is_auto) == ("rev9", "Küche", True)
        c2 = store.get_conversation("c-2")
        assert c2.deleted_at == NOW - 86400 and c2.system_prompt == "Be brief."
        assert [c.id for c in store.list_trash()] == ["c-2"]

        tree = {m.id: m for m in store.tree("c-1")}
        for _seq, mid, _conv, parent, role, content, reasoning, tokens, stats, state, created, active in OLD_MSGS[:5]:
            m = tree[mid]
            assert (m.parent_id, m.role, m.content, m.reasoning, m.created_at, m.active) == (
                parent,
                role,
                content,
                reasoning,
                created,
                bool(active),
            )
            assert m.token_ids == (json.loads(tokens) if tokens else None)
            assert m.stats == (json.loads(stats) if stats else None)
            assert m.state == ("interrupted" if state == "streaming" else state)
        assert tree["m-2"].provenance == ({"seed": 42} if version >= 2 else None)
        assert [m.id for m in store.active_path("c-1")] == ["m-1", "m-3", "m-4", "m-5"]
        assert [(m.sibling_index, m.sibling_count) for m in store.siblings("m-2")] == [(0, 2), (1, 2)]

        # Old text is searchable (the FTS index was built from existing rows).
        assert [h.message_id for h in store.search("creme")] == ["m-1"]
        assert [h.conv_id for h in store.search("uber")] == ["c-1"]
        assert store.search("quokka") == []  # in the trash
        store.restore("c-2")
        assert [h.message_id for h in store.search("quokka")] == ["m-6"]

        # And the migrated file is fully usable, tool turns included.
        new = store.append_message("c-1", "m-5", "user", "Danke")
        assert store.active_path("c-1")[-1].id == new
        result = store.append_message("c-1", new, "environment", "42 Bohnen", tool={"name": "count_beans"})
        assert [h.message_id for h in store.search("bohnen")] == [result]
        assert [h.message_id for h in store.search("count_beans")] == [result]
        store.set_engine_state("c-1", {"ok": True})
        store.rename("c-1", "Kaffee")
        if version == 3:
            assert store.get_engine_state("c-2") == {"v": 3}

        # Documents can be attached to a migrated conversation, and leave with it.
        from olmo3.docs.chunk import chunk
        from olmo3.docs.extract import Document, Page

        doc = Document("notes.txt", "text", 40, "0" * 64, (Page(1, "The ferry timetable changed in spring."),))
        attachment = store.add_attachment("c-2", doc, chunk(doc))
        assert [a.id for a in store.attachments("c-2")] == [attachment]
        assert store.search("ferry") == []  # document text is not message text
        store.delete("c-2")
        store.delete_forever("c-2")
        assert store.attachments("c-2") == []
    db_ok(path)

    # The pre-migration file was kept as a backup, at its old version and with its rows.
    backup = path.with_name(path.name + f".v{version}.bak")
    conn = sqlite3.connect(backup)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == len(OLD_MSGS)
    conn.close()


def test_fresh_database_is_current(db: Path) -> None:
    ConversationStore(db).close()
    conn = raw(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == CURRENT_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert not list(db.parent.glob("*.bak"))  # nothing to back up for a new file
