"""Chat with documents through the real window: 📎, drop and paste; chips; whole and retrieved; Sources; bad files.

A real tiny Olmo-3 model on the engine thread, the real chores thread, a real conversation store, PDFs written by
Qt's QPdfWriter and a Word file by python-docx.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from doc_files import PLANTED_DOCX, PLANTED_PDF, memo_docx, report_pdf, scanned_pdf
from gui_helpers import (  # noqa: F401 (threads_are_joined is an autouse fixture)
    load_model,
    make_window,
    send,
    threads_are_joined,
    wait_idle,
)
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication

from desktop.chat import AssistantMessageWidget, UserMessageWidget
from olmo3.docs.turn import from_provenance

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def file_mime(*paths: Path) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


def drop_on(window, *paths: Path) -> None:
    """Drag files over the window and drop them, through its real drag-enter and drop handlers (offscreen Qt has no
    drag manager to deliver synthetic drops, so the handlers are called as the platform would call them)."""
    mime = file_mime(*paths)  # the events do not own it: keep it alive while they are handled
    centre = QPointF(window.width() / 2, window.height() / 2)
    enter = QDragEnterEvent(
        centre.toPoint(), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    enter.setAccepted(False)
    window.dragEnterEvent(enter)
    assert enter.isAccepted(), "the window refused the dragged files"
    drop = QDropEvent(centre, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(drop)
    assert drop.isAccepted()


def chips(window) -> dict[str, tuple[str, str]]:
    return {c.name: (c.state, c.detail.text()) for c in window.composer.chips.chips()}


def wait_chips(qtbot, window, n: int) -> None:
    qtbot.waitUntil(lambda: len(chips(window)) == n and not window.documents.busy(), timeout=60_000)


def row_counts(path: Path) -> tuple[int, int, int]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT (SELECT count(*) FROM conversations), (SELECT count(*) FROM attachments),"
            " (SELECT count(*) FROM passages)"
        ).fetchone()
    finally:
        conn.close()


def test_attach_pdf_and_docx_send_see_chips_and_sources_and_open_a_passage(qtbot, tmp_path, tiny_model_dir):
    window = make_window(qtbot, tmp_path / "home")
    load_model(qtbot, window, tiny_model_dir)
    pdf = report_pdf(tmp_path / "report.pdf")
    docx = memo_docx(tmp_path / "memo.docx")
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nThe tram depot opened in 1899.\n")

    # 📎 opens the file chooser; dropping a file anywhere on the window attaches it; so does pasting one.
    window.documents.ask_files = lambda: [str(pdf)]
    qtbot.mouseClick(window.composer.attach_button, Qt.MouseButton.LeftButton)
    drop_on(window, docx)
    QGuiApplication.clipboard().setMimeData(file_mime(notes))
    window.composer.edit.setFocus()
    window.composer.edit.paste()
    # Qt deletes the clipboard's data when the process exits, after Python has gone: a QMimeData made in Python
    # must not be left there (its wrapper's destructor would crash the exit with SIGSEGV).
    QGuiApplication.clipboard().clear()
    assert window.composer.text() == ""  # the file was attached, not its path typed
    assert window.composer.hint.text().startswith("Reading")
    wait_chips(qtbot, window, 3)
    shown = chips(window)
    assert shown["report.pdf"][0] == "ready" and shown["report.pdf"][1].startswith("8 pages · ")
    assert shown["report.pdf"][1].endswith("tokens · passages") and shown["memo.docx"][1].endswith("· whole")
    conv_id = window.controller.current
    assert conv_id is not None  # the new chat was saved with its first document (pending, like a draft)
    assert [a.message_id for a in window.store.attachments(conv_id)] == [None, None, None]

    # The third one goes again before sending: its chip's ×.
    notes_chip = next(c for c in window.composer.chips.chips() if c.name == "notes.md")
    qtbot.mouseClick(notes_chip.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(chips(window)) == 2)
    assert [a.name for a in window.store.attachments(conv_id)] == ["report.pdf", "memo.docx"]

    question = "Who sealed the copper vault, and in which year?"
    send(qtbot, window, question)
    assert window.composer.chips.chips() == [] and not window.composer.chips.isVisible()
    user = next(w for w in window.chat_view.messages() if isinstance(w, UserMessageWidget))
    assert user.content() == question  # the chat shows the message as typed
    sent = {c.name: c.detail.text() for c in user.chips.chips()}
    assert sent["memo.docx"].endswith("· whole") and sent["memo.docx"].startswith("1 page · ")
    assert sent["report.pdf"].startswith("8 pages · ") and "passage" in sent["report.pdf"]
    assert user.chips.isVisibleTo(window)

    # The store keeps the typed text; the message's provenance records what the turn read; the engine read it.
    stored = window.store.active_path(conv_id)[0]
    assert stored.content == question
    used = {a.name: a for a in from_provenance(stored.provenance)}
    assert used["memo.docx"].mode == "whole" and used["report.pdf"].mode == "retrieved"
    assert {a.message_id for a in window.store.attachments(conv_id)} == {stored.id}
    raw = window.store.get_engine_state(conv_id)["nodes"][0]["raw"]
    assert PLANTED_DOCX in raw and raw.endswith(question)

    # Under the reply: Sources, one per passage (file and page) and the whole memo.
    reply = next(w for w in window.chat_view.messages() if isinstance(w, AssistantMessageWidget))
    assert reply.sources.isVisibleTo(window)
    labels = [b.accessibleName() for b in reply.sources.buttons]
    assert "memo.docx, whole document" in labels and any(label.startswith("report.pdf, page") for label in labels)
    report_used = next(a for a in from_provenance(stored.provenance) if a.name == "report.pdf")
    index = next(i for i, h in enumerate(report_used.passages) if PLANTED_PDF in " ".join(h.text.split()))
    planted = [b for b in reply.sources.buttons if b.accessibleName().startswith("report.pdf, ")][index]
    hit = report_used.passages[index]
    assert hit.page_start == 5  # the planted sentence is on page 5 (its passage may run onto page 6)
    assert planted.text() == hit.page_label and planted.accessibleName() == f"report.pdf, {hit.page_label}"
    qtbot.mouseClick(planted, Qt.MouseButton.LeftButton)
    dialog = window.documents.dialog
    assert dialog is not None and dialog.isVisible() and dialog.windowTitle() == f"report.pdf — {hit.page_label}"
    assert PLANTED_PDF in " ".join(dialog.text().split())
    whole = next(b for b in reply.sources.buttons if b.accessibleName() == "memo.docx, whole document")
    qtbot.mouseClick(whole, Qt.MouseButton.LeftButton)
    assert PLANTED_DOCX in window.documents.dialog.text()
    window.documents.dialog.close()

    # A follow-up: the memo is in the cached transcript; the report is searched again for the new question.
    send(qtbot, window, "When does the ferry to Ostholm leave?")
    finished = window.controller.last_finished
    assert finished.stats.cached_tokens >= len(window.store.get_engine_state(conv_id)["tokens"]) // 2
    second_user = [w for w in window.chat_view.messages() if isinstance(w, UserMessageWidget)][-1]
    assert [c.name for c in second_user.chips.chips()] == ["report.pdf"]
    last_reply = [w for w in window.chat_view.messages() if isinstance(w, AssistantMessageWidget)][-1]
    assert all(b.accessibleName().startswith("report.pdf, page") for b in last_reply.sources.buttons)

    # Reopening the conversation shows the same chips and sources, from the store.
    window.controller.new_chat()
    window.controller.open(conv_id)
    window.chat_view.finish_backfill()
    user = next(w for w in window.chat_view.messages() if isinstance(w, UserMessageWidget))
    assert {c.name for c in user.chips.chips()} == {"report.pdf", "memo.docx"}
    reply = next(w for w in window.chat_view.messages() if isinstance(w, AssistantMessageWidget))
    assert "memo.docx, whole document" in [b.accessibleName() for b in reply.sources.buttons]


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    from pypdf import PdfWriter

    from olmo3.docs.minipdf import write_pdf

    plain = write_pdf(tmp_path / "plain.pdf", [["Secret minutes of the board."]])
    writer = PdfWriter(clone_from=str(plain))
    writer.encrypt("hunter2", algorithm="AES-128")
    locked = tmp_path / "locked.pdf"
    with open(locked, "wb") as f:
        writer.write(f)
    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.truncate(51 * 1024 * 1024)  # sparse: refused by its size before a byte is read
    empty = tmp_path / "empty.md"
    empty.write_bytes(b"")
    return {
        "scan.pdf": (scanned_pdf(tmp_path / "scan.pdf"), "this PDF has no text; it may be scanned"),
        "locked.pdf": (locked, "password"),
        "photo.txt": (binary, "this file is not text"),
        "huge.txt": (huge, "the file is too large (51.0 MB; the limit is 50.0 MB)"),
        "empty.md": (empty, "empty"),
        "gone.pdf": (tmp_path / "gone.pdf", "does not exist"),
    }


def test_every_bad_file_shows_its_reason_on_its_chip_and_changes_nothing(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path / "home", start_engine=False)
    bad = _bad_files(tmp_path)
    before = row_counts(window.paths.database)
    window.documents.ask_files = lambda: [str(path) for path, _reason in bad.values()]
    qtbot.mouseClick(window.composer.attach_button, Qt.MouseButton.LeftButton)
    wait_chips(qtbot, window, len(bad))
    for chip in window.composer.chips.chips():
        _path, phrase = bad[chip.name]
        assert chip.state == "error", chip.name
        assert phrase in chip.detail.text(), (chip.name, chip.detail.text())
        assert "\n" not in chip.detail.text() and "Traceback" not in chip.detail.text()
        assert chip.isVisibleTo(window) and chip.detail.isVisibleTo(window)
    # Nothing was written: no conversation, no attachment, no passage; the chat is still a new one.
    assert row_counts(window.paths.database) == before == (0, 0, 0)
    assert window.controller.current is None and window.store.list_conversations() == []
    assert window.composer.hint.text() == ""  # nothing is being read: sending is not held up
    # Each can be dismissed.
    first = window.composer.chips.chips()[0]
    qtbot.mouseClick(first.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(chips(window)) == len(bad) - 1)


def test_pending_documents_come_back_and_delete_forever_removes_them(qtbot, tmp_path):
    window = make_window(qtbot, tmp_path / "home", start_engine=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("The lock keeper's cottage was rebuilt in 1931.")
    drop_on(window, notes)
    wait_chips(qtbot, window, 1)
    conv_id = window.controller.current
    assert conv_id is not None and row_counts(window.paths.database)[1:] == (1, 1)
    # Another conversation, then back: the unsent document is still in the composer.
    window.controller.new_chat()
    assert chips(window) == {}
    window.controller.open(conv_id)
    assert list(chips(window)) == ["notes.txt"]
    # The Trash keeps it; delete forever takes the text and the passages with the conversation.
    window.delete_conversation(conv_id)
    assert row_counts(window.paths.database)[1:] == (1, 1)
    window.delete_forever(conv_id)
    assert row_counts(window.paths.database) == (0, 0, 0)
