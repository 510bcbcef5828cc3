"""The Qt-free turn recorder and store sync: a real engine (tiny model) and a real SQLite store, no widgets.

Engine ids are store ids: every message the engine reports has a row under the same id, and nothing is matched by
content (two identical user messages on different branches stay distinct).
"""

from __future__ import annotations

import dataclasses
import threading

import pytest

from desktop import sync
from desktop.turns import Turn, TurnRecorder, plan_documents, restore_prompt_texts
from olmo3.chat.engine import Engine
from olmo3.chat.events import Event, JobFailed, TextDelta, TurnFinished
from olmo3.chat.transcript import TranscriptState
from olmo3.ids import new_id
from olmo3.store import ConversationStore


class Events:
    def __init__(self) -> None:
        self.items: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.items.append(event)

    def of(self, job_id: int) -> list[Event]:
        with self.lock:
            return [e for e in self.items if e.job_id == job_id]


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    events = Events()
    engine = Engine(events, cache_dir=tmp_path / "kv", session_options={"temperature": 0.0, "max_tokens": 6})
    engine.start()
    assert engine.wait(engine.load_model(tiny_model_dir), 60)
    store = ConversationStore(tmp_path / "chats.db")
    conv = store.create_conversation(model_id="tiny")
    engine.wait(engine.open_conversation(conv), 30)
    yield engine, events, store, conv
    assert engine.shutdown(30)
    store.close()


def replay(recorder: TurnRecorder, events: Events, turn: Turn, engine: Engine) -> TurnFinished:
    """Feed a finished job's events to the recorder, as the controller does on the GUI thread."""
    assert engine.wait(turn.job_id, 60)
    finished = None
    for event in events.of(turn.job_id):
        assert not isinstance(event, JobFailed), event
        if isinstance(event, TextDelta):
            recorder.on_delta(turn, event)
        elif isinstance(event, TurnFinished):
            recorder.on_finished(turn, event)
            finished = event
    assert finished is not None
    return finished


def send(engine, events, store, recorder, conv, text, parent):
    user_id, reply_id = new_id(), new_id()
    job = engine.send(conv, text, message_id=user_id, reply_id=reply_id)
    turn = Turn(job, conv, "send", user_id, reply_id, new_user=True, parent_id=parent, text=text)
    return replay(recorder, events, turn, engine), turn


def test_engine_ids_are_store_ids_through_send_regenerate_and_edit(setup):
    engine, events, store, conv = setup
    recorder = TurnRecorder(store, lambda: "tiny")
    first, t1 = send(engine, events, store, recorder, conv, "same words", None)
    assert first.reply is not None and first.reply.id == t1.reply_id
    second, t2 = send(engine, events, store, recorder, conv, "same words", t1.reply_id)

    # Regenerate the last reply: a sibling row under the same user message.
    reply_id = new_id()
    job = engine.regenerate(conv, reply_id=reply_id)
    regen = replay(recorder, events, Turn(job, conv, "regenerate", t2.user_id, reply_id, new_user=False), engine)
    assert [m.id for m in store.siblings(reply_id)] == [t2.reply_id, reply_id]

    # Edit the first user message with the *same* text: a new branch that is not confused with the old one.
    user_id, reply_id = new_id(), new_id()
    job = engine.edit(conv, 0, "same words", message_id=user_id, reply_id=reply_id)
    edit = replay(
        recorder,
        events,
        Turn(job, conv, "edit", user_id, reply_id, new_user=True, parent_id=None, text="same words"),
        engine,
    )
    state = edit.state
    store_ids = {m.id for m in store.tree(conv)}
    assert {n.id for n in state.nodes} == store_ids  # one id per message, on both sides
    assert [m.id for m in store.active_path(conv)] == [n.id for n in state.active_path()] == [user_id, reply_id]
    assert [m.id for m in store.siblings(user_id)] == [t1.user_id, user_id]
    assert regen.reply is not None and store.get_message(regen.reply.id).state == "complete"
    # The saved state reads back equal.
    assert TranscriptState.from_json(store.get_engine_state(conv)) == state
    assert second.stats.cached_tokens > 0


def test_a_turn_cancelled_before_its_first_token_writes_nothing(setup):
    engine, events, store, conv = setup
    recorder = TurnRecorder(store, lambda: "tiny")
    gate = threading.Event()
    engine.call(lambda e: gate.wait(30))  # hold the engine thread so the send is cancelled before it starts
    user_id, reply_id = new_id(), new_id()
    job = engine.send(conv, "hello", message_id=user_id, reply_id=reply_id)
    engine.cancel()
    gate.set()
    turn = Turn(job, conv, "send", user_id, reply_id, new_user=True, text="hello")
    finished = replay(recorder, events, turn, engine)
    assert finished.reply is None and finished.stats.finish_reason == "cancelled"
    assert store.tree(conv) == [] and not turn.rows_written


def test_sync_adds_engine_messages_the_store_lacks_and_mirrors_branches(setup):
    engine, events, store, conv = setup
    recorder = TurnRecorder(store, lambda: "tiny")
    first, _ = send(engine, events, store, recorder, conv, "one", None)
    # Another store (a fresh profile) that has none of the rows: sync writes them all, under the engine's ids.
    other = ConversationStore(store.path.parent / "other.db")
    conv2 = other.create_conversation()
    sync.sync_store_from_state(other, conv2, first.state)
    assert [(m.id, m.role, m.content) for m in other.active_path(conv2)] == [
        (n.id, n.role, n.content) for n in first.state.active_path()
    ]
    other.close()


def test_adopt_store_ids_converts_a_v01_state_once(setup):
    engine, events, store, conv = setup
    recorder = TurnRecorder(store, lambda: "tiny")
    first, t1 = send(engine, events, store, recorder, conv, "hello", None)
    # A v0.1 state: the engine named nodes itself; replies were linked by provenance["engine_id"].
    legacy_ids = {t1.user_id: "engine-user", t1.reply_id: "engine-reply"}
    old = first.state
    legacy = dataclasses.replace(
        old,
        root_children=tuple(legacy_ids[c] for c in old.root_children),
        nodes=tuple(
            dataclasses.replace(
                n,
                id=legacy_ids[n.id],
                parent=legacy_ids.get(n.parent) if n.parent else None,
                children=tuple(legacy_ids[c] for c in n.children),
            )
            for n in old.nodes
        ),
    )
    with store._write() as db:  # a file written by v0.1: the reply linked to its engine id by provenance
        db.execute("UPDATE messages SET provenance = ? WHERE id = ?", ('{"engine_id": "engine-reply"}', t1.reply_id))
    adopted = sync.adopt_store_ids(legacy, store.tree(conv))
    assert adopted == old  # the user message matched by content under the root, the reply by provenance
    assert sync.adopt_store_ids(old, store.tree(conv)) is old  # already shared: nothing to do


def test_a_turns_documents_are_planned_recorded_and_bound(setup):
    """plan_documents + TurnRecorder: the message as typed, its documents in its provenance, the composer's
    attachments bound to it; a follow-up finds the whole document in the transcript, an edit carries it again."""
    from olmo3.docs.turn import from_provenance, prepare_bytes
    from olmo3.store.attachments import index_document

    engine, events, store, conv = setup
    recorder = TurnRecorder(store, lambda: "tiny")
    memo = index_document(store.path, conv, prepare_bytes("memo.txt", b"The ferry leaves at seven."))
    context = (0, 4096)
    plan = plan_documents(store, conv, "When?", parent_id=None, new_ids=(memo,), context=context, max_tokens=6)
    assert [(a.attachment_id, a.mode) for a in plan.attachments] == [(memo, "whole")]
    user_id, reply_id = new_id(), new_id()
    job = engine.send(conv, "When?", prompt_text=plan.prompt_text, message_id=user_id, reply_id=reply_id)
    turn = Turn(job, conv, "send", user_id, reply_id, new_user=True, text="When?")
    turn.use_plan(plan, (memo,))
    finished = replay(recorder, events, turn, engine)
    stored = store.get_message(user_id)
    assert stored.content == "When?" and [a.name for a in from_provenance(stored.provenance)] == ["memo.txt"]
    assert [a.message_id for a in store.attachments(conv)] == [user_id]
    assert "The ferry leaves at seven." in finished.state.node(user_id).raw

    used = (finished.stats.context_used, finished.stats.context_limit)
    follow = plan_documents(store, conv, "Sure?", parent_id=reply_id, context=used, max_tokens=6)
    assert follow.attachments == () and follow.prompt_text == "Sure?"  # already in the cached transcript
    dropped = plan_documents(
        store, conv, "Sure?", parent_id=reply_id, in_context={user_id: False}, context=used, max_tokens=6
    )
    assert [a.mode for a in dropped.attachments] == ["whole"]  # its turn left the context: it is sent again
    edit = plan_documents(
        store, conv, "When exactly?", parent_id=None, carried_from=user_id, context=context, max_tokens=6
    )
    assert [a.attachment_id for a in edit.attachments] == [memo] and edit.prompt_text.endswith("When exactly?")

    # Without the engine's state (an imported conversation), the messages' texts are rebuilt from the store: the
    # documents come back from the turn's record, exactly as the model read them.
    rebuilt = restore_prompt_texts(
        sync.state_from_store(store.tree(conv), system_prompt=None, think=False), store, conv
    )
    assert rebuilt.node(user_id).raw == finished.state.node(user_id).raw
    assert rebuilt.node(reply_id).raw == finished.state.node(reply_id).raw
