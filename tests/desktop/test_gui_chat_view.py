"""The chat view, the streaming markdown view and the composer, as real widgets (offscreen), without a model."""

from __future__ import annotations

import gui_helpers  # noqa: F401  (offscreen Qt)
import pytest
from gui_helpers import threads_are_joined  # noqa: F401 (autouse: no thread outlives a test)
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from desktop import samples
from desktop.chat import AssistantMessageWidget, ChatView, UserMessageWidget
from desktop.composer import Composer, ContextBar
from desktop.rich_text import CodePanel, MarkdownView


@pytest.fixture
def view(qtbot):
    from desktop.app import create_application, theme_manager

    theme_manager(create_application([]), "light")
    widget = ChatView()
    widget.resize(900, 700)
    widget.show()
    qtbot.addWidget(widget)
    return widget


def _conversation():
    return [
        {"sid": "u1", "role": "user", "content": samples.USER_QUESTION, "branch_index": 0, "branch_count": 1},
        {
            "sid": "a1",
            "role": "assistant",
            "content": samples.ANSWER,
            "reasoning": samples.REASONING,
            "thought_s": 7.4,
            "branch_index": 1,
            "branch_count": 2,
            "finish_reason": "stop",
        },
        {"sid": "u2", "role": "user", "content": samples.FOLLOW_UP, "branch_index": 0, "branch_count": 1},
        {"sid": "a2", "role": "assistant", "content": samples.FOLLOW_UP_ANSWER, "finish_reason": "cancelled"},
    ]


def _segments_text(view: MarkdownView) -> str:
    parts = []
    for widget in view._segments():
        if isinstance(widget, CodePanel):
            parts.append(widget.view.code())
        else:
            parts.append(widget.document().toPlainText())
    return "\n".join(parts)


def test_streamed_markdown_ends_identical_to_a_whole_render(qtbot):
    text = samples.long_answer(800)
    streamed, whole = MarkdownView(), MarkdownView()
    qtbot.addWidget(streamed)
    qtbot.addWidget(whole)
    streamed.begin_stream()
    for i, piece in enumerate(samples.tokenize(text)):
        streamed.append(piece)
        if i % 3 == 0:
            streamed.flush()
    streamed.flush()
    streamed.finish()
    whole.set_markdown(text)
    assert _segments_text(streamed) == _segments_text(whole)
    assert [type(w) for w in streamed._segments() if isinstance(w, CodePanel)] == [
        type(w) for w in whole._segments() if isinstance(w, CodePanel)
    ]
    # Streaming re-renders only a tail: finished blocks were merged, not one widget per flush.
    assert streamed.segment_count() <= whole.segment_count() + 4


def test_open_code_fence_streams_line_by_line(qtbot):
    view = MarkdownView()
    qtbot.addWidget(view)
    view.begin_stream()
    view.append("Code:\n\n```python\nx = 1\n")
    view.flush()
    panel = view.code_panels()[-1]
    view.append("y = 2\nz")
    view.flush()
    assert view.code_panels()[-1] is panel  # the same panel grows; nothing is rebuilt
    assert panel.view.code() == "x = 1\ny = 2\nz"
    view.append(" = 3\n```\n\nDone.")
    view.flush()
    view.finish()
    assert view.code_panels() == [panel] and panel.view.code() == "x = 1\ny = 2\nz = 3"
    assert "Done." in _segments_text(view)


def test_stream_coalesces_renders(view, qtbot):
    view.add_user_message("hi", 0)
    widget = view.begin_assistant()
    for piece in samples.tokenize(samples.long_answer(300)):
        view.append_delta(piece)
    assert view.flush_count == 0  # appending only buffers
    qtbot.waitUntil(lambda: view.flush_count >= 1)
    assert view.flush_count <= 2
    view.end_stream({"finish_reason": "stop"})
    assert widget.answer.text() == "".join(samples.tokenize(samples.long_answer(300)))


def test_messages_render_and_reuse_widgets(view):
    view.set_messages(_conversation())
    widgets = view.messages()
    assert [w.role for w in widgets] == ["user", "assistant", "user", "assistant"]
    first_reply = widgets[1]
    assert isinstance(first_reply, AssistantMessageWidget)
    assert first_reply.reasoning.header.text() == "Thought for 7 s"
    assert first_reply.switcher.label.text() == "2 / 2"
    assert first_reply.answer.code_panels()[0].language_label.text() == "python"
    last = widgets[3]
    assert isinstance(last, AssistantMessageWidget)
    assert not last.notice.isHidden() and "Stopped" in last.notice_label.text()
    assert not last.retry_button.isHidden()
    # Updating metadata of the same text keeps the widgets; a changed reply rebuilds from there on.
    changed = _conversation()
    changed[3] = {**changed[3], "content": "A different reply", "finish_reason": "stop"}
    view.set_messages(changed)
    assert view.messages()[:3] == widgets[:3] and view.messages()[3] is not last
    assert view.messages()[3].notice.isHidden()


def test_long_conversations_open_with_the_last_messages_first(view, qtbot):
    messages = []
    for i in range(30):
        messages.append({"sid": f"u{i}", "role": "user", "content": f"question {i}"})
        messages.append({"sid": f"a{i}", "role": "assistant", "content": f"answer {i}"})
    view.set_messages(messages)
    assert len(view.messages()) < 60 and view.messages()[-1].content() == "answer 29"
    qtbot.waitUntil(lambda: not view.is_backfilling())
    assert [w.content() for w in view.messages()] == [m["content"] for m in messages]


def test_copy_buttons_and_branch_and_edit_signals(view, qtbot):
    view.set_messages(_conversation())
    reply = view.messages()[1]
    panel = reply.answer.code_panels()[0]
    qtbot.mouseClick(panel.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == panel.view.code()
    assert panel.copy_button.text() == "Copied"
    qtbot.mouseClick(reply.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == samples.ANSWER

    with qtbot.waitSignal(view.branch_requested) as blocker:
        qtbot.mouseClick(reply.switcher.prev_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] == {"sid": "a1", "user_turn_index": 0, "branch_index": 0, "which": "reply"}

    user = view.messages()[2]
    assert isinstance(user, UserMessageWidget)
    user.start_edit()
    user.editor.setPlainText("Edited question")
    with qtbot.waitSignal(view.edit_requested) as blocker:
        qtbot.keyClick(user.editor, Qt.Key.Key_Return)
    assert blocker.args == [1, "Edited question"] and not user.is_editing()

    with qtbot.waitSignal(view.regenerate_requested):
        view.messages()[3].regenerate_button.click()


def test_only_the_last_reply_can_be_regenerated_and_busy_disables_it(view):
    view.set_messages(_conversation())
    first, last = view.messages()[1], view.messages()[3]
    assert first.retry_button.isHidden() and not last.retry_button.isHidden()
    assert last.regenerate_button.isEnabled()
    view.set_busy(True)
    assert not last.regenerate_button.isEnabled()
    assert not view.messages()[0].edit_button.isEnabled()


def test_sticks_to_bottom_unless_scrolled_up_then_shows_new_text_pill(view, qtbot):
    view.set_messages(_conversation())
    view.begin_assistant()
    for _ in range(40):
        view.append_delta("More streamed text that makes the reply longer and longer. ")
        view.flush()
        QApplication.processEvents()
    assert view.is_at_bottom()
    view.verticalScrollBar().setValue(0)
    assert not view.is_at_bottom()
    for _ in range(20):
        view.append_delta("Even more text.\n\n")
        view.flush()
        QApplication.processEvents()
    assert view.verticalScrollBar().value() == 0  # the user's position is kept
    assert view.pill.isVisible()
    qtbot.mouseClick(view.pill, Qt.MouseButton.LeftButton)
    QApplication.processEvents()
    assert view.is_at_bottom() and not view.pill.isVisible()


def test_composer_enter_sends_shift_enter_breaks_line_and_stop(qtbot):
    composer = Composer()
    qtbot.addWidget(composer)
    composer.show()
    composer.set_state("ready", model_name="tiny")
    qtbot.keyClicks(composer.edit, "line one")
    qtbot.keyClick(composer.edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(composer.edit, "line two")
    assert composer.text() == "line one\nline two"
    with qtbot.waitSignal(composer.send_requested) as blocker:
        qtbot.keyClick(composer.edit, Qt.Key.Key_Return)
    assert blocker.args == ["line one\nline two"] and composer.text() == ""
    composer.set_state("generating")
    assert composer.send_button.glyph() == "stop" and composer.send_button.isEnabled()
    qtbot.keyClicks(composer.edit, "draft")
    with qtbot.assertNotEmitted(composer.send_requested):
        qtbot.keyClick(composer.edit, Qt.Key.Key_Return)  # Enter while generating keeps the draft
    assert composer.text() == "draft"
    with qtbot.waitSignal(composer.stop_requested):
        qtbot.mouseClick(composer.send_button, Qt.MouseButton.LeftButton)


def test_composer_explains_its_disabled_states(qtbot):
    composer = Composer()
    qtbot.addWidget(composer)
    composer.show()
    composer.set_state("no_model")
    assert not composer.edit.isEnabled() and "No model loaded" in composer.edit.placeholderText()
    assert composer.choose_button.isVisible()
    with qtbot.waitSignal(composer.choose_model_requested):
        qtbot.mouseClick(composer.choose_button, Qt.MouseButton.LeftButton)
    composer.set_state("loading", model_name="Olmo 3 7B")
    assert "Loading Olmo 3 7B" in composer.hint.text() and not composer.send_button.isEnabled()
    composer.set_state("ready")
    assert not composer.send_button.isEnabled()  # nothing typed yet
    composer.set_text("hi")
    assert composer.send_button.isEnabled()


def test_context_bar_warns_near_the_limit(qtbot):
    bar = ContextBar()
    qtbot.addWidget(bar)
    bar.set_usage(1000, 8192)
    assert bar.level() == "ok" and "1,000 / 8,192" in bar.label.text()
    bar.set_usage(7000, 8192)
    assert bar.level() == "warn" and "getting full" in bar.toolTip()
    bar.set_usage(8000, 8192)
    assert bar.level() == "critical" and "drop the oldest turns" in bar.toolTip()
