"""The conversation column: user bubbles, assistant replies, reasoning, hover actions and streaming.

:class:`ChatView` is a scroll area holding one centred column of message widgets. It never talks to the engine;
it shows what it is given and emits signals for what the user asks for (regenerate, edit & resend, switch branch,
retry). Streaming text goes through :meth:`ChatView.append_delta`, which only buffers; a single-shot timer flushes
the buffers into the :class:`~desktop.rich_text.MarkdownView` of the streaming message at most every 16 ms, so
the GUI thread does a bounded amount of work per frame however fast tokens arrive.

Signals:
    regenerate_requested(): regenerate the last reply.
    reproduce_requested(str): regenerate reply ``sid`` (the last) with exactly the settings it was made with.
    edit_requested(int, str): resend user turn ``i`` with new text.
    branch_requested(int, int): show alternative ``b`` of user turn ``i``.
    retry_requested(): the last reply was interrupted or failed; try again.
    continue_requested(): the last reply filled the context; go on without the oldest turns.
    copied(str): text was put on the clipboard (the window shows a small toast).
    stop_requested(): the Stop of a running tool call was clicked.
    source_requested(object): a "Sources" link under a reply: ``(TurnAttachment, Hit | None)``.

Tool turns: an ``environment`` message (a tool's result) is a :class:`~desktop.chat.tool_card.ToolCallCard`;
during a turn the controller adds cards as calls are asked for and run (:meth:`ChatView.add_tool_card`).
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from desktop import theme as th
from desktop.chat.assistant_message import AssistantMessageWidget
from desktop.chat.message import MessageWidget
from desktop.chat.tool_card import ToolCallCard
from desktop.chat.user_message import UserMessageWidget

COLUMN_MAX = 760  # text width of the conversation column
EAGER_MESSAGES = 8  # a conversation opens with its last messages built; older ones follow in the background
BACKFILL_BUDGET_S = 0.008  # GUI time per background step that builds older messages
COLUMN_PAD = 28
FLUSH_INTERVAL_MS = 16  # ≤ 60 Hz


class EmptyConversation(QWidget):
    """What an empty conversation shows: a greeting that names the loaded model."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 80, 0, 0)
        layout.setSpacing(8)
        self.logo = QLabel(self)
        self.logo.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.title = QLabel("", self)
        self.title.setObjectName("emptyTitle")
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.subtitle = QLabel("", self)
        self.subtitle.setObjectName("emptySubtitle")
        self.subtitle.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.subtitle.setWordWrap(True)
        layout.addWidget(self.logo)
        layout.addWidget(self.title)
        layout.addWidget(self.subtitle)
        self.set_model(None)
        self.apply_theme()

    def set_model(self, name: str | None, *, loading: bool = False) -> None:
        """The greeting only once a model can answer; until then, what the user is waiting for (or must do)."""
        if loading:
            self.title.setText(f"Loading {name or 'the model'}…")
            self.subtitle.setText("Everything runs on this Mac. You can start typing.")
        elif name:
            self.title.setText("What can I help with?")
            self.subtitle.setText(f"Chatting with {name}. Everything runs on this Mac.")
        else:
            self.title.setText("Start by loading a model")
            self.subtitle.setText("Your models run entirely on this Mac; nothing you type leaves it.")

    def apply_theme(self) -> None:
        self.logo.setPixmap(th.pixmap("sparkle", 36, "accent"))


class NewTextPill(QPushButton):
    """ "↓ New text": appears over the bottom of the chat when the user scrolled up during streaming."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__("New text", parent)
        self.setObjectName("newTextPill")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setIcon(th.icon("arrow-down", "accent_text"))
        self.setIconSize(QSize(14, 14))
        self.adjustSize()
        self.hide()

    def apply_theme(self) -> None:
        self.setIcon(th.icon("arrow-down", "accent_text"))


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a.get("role") == b.get("role")
        and (a.get("content") or "") == (b.get("content") or "")
        and (a.get("reasoning") or "") == (b.get("reasoning") or "")
    )


class ChatView(QScrollArea):
    """The scrolling conversation column. See the module docstring for its signals."""

    regenerate_requested = Signal()
    reproduce_requested = Signal(str)
    edit_requested = Signal(int, str)
    branch_requested = Signal(object)
    retry_requested = Signal()
    continue_requested = Signal()
    copied = Signal(str)
    stop_requested = Signal()
    source_requested = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("chatView")
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        content = QWidget(self)
        content.setObjectName("chatContent")
        outer = QHBoxLayout(content)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.column = QWidget(content)
        self.column.setObjectName("chatColumn")
        self.column.setMaximumWidth(COLUMN_MAX + 2 * COLUMN_PAD)
        self.column.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        outer.addStretch(0)
        outer.addWidget(self.column, 1)
        outer.addStretch(0)
        self._column_layout = QVBoxLayout(self.column)
        self._column_layout.setContentsMargins(COLUMN_PAD, 24, COLUMN_PAD, 28)
        self._column_layout.setSpacing(12)
        self.empty = EmptyConversation(self.column)
        self._column_layout.addWidget(self.empty)
        self._column_layout.addStretch(1)
        self.setWidget(content)

        self._messages: list[MessageWidget] = []
        self._streaming: AssistantMessageWidget | None = None
        self._stick = True
        self._busy = False
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(FLUSH_INTERVAL_MS)
        self._flush_timer.timeout.connect(self.flush)
        self.pill = NewTextPill(self.viewport())
        self.pill.clicked.connect(self.scroll_to_bottom)
        bar = self.verticalScrollBar()
        bar.rangeChanged.connect(self._on_range_changed)
        bar.valueChanged.connect(self._on_scrolled)
        self.flush_count = 0  # number of coalesced flushes (the UI benchmark reads it)
        self._older: list[dict[str, Any]] = []  # messages above the built ones, still to be built
        self._anchor_dist: int | None = None
        self._backfill_timer = QTimer(self)
        self._backfill_timer.setSingleShot(True)
        self._backfill_timer.setInterval(0)
        self._backfill_timer.timeout.connect(self._backfill_step)
        # Why reproducing a reply could give other tokens now (set by the controller; see desktop.provenance).
        self.reproduce_note: Any = lambda _provenance: None

    # building -------------------------------------------------------------------------------------------------
    def messages(self) -> list[MessageWidget]:
        """The message widgets built so far (older ones may still be pending, see :meth:`finish_backfill`)."""
        return list(self._messages)

    def message_dicts(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self._older] + [dict(w.message) for w in self._messages]

    def streaming_widget(self) -> AssistantMessageWidget | None:
        return self._streaming

    def clear(self) -> None:
        self._stop_stream_state()
        self._older = []
        self._backfill_timer.stop()
        self._anchor_dist = None
        for widget in self._messages:
            self._column_layout.removeWidget(widget)
            widget.hide()
            widget.deleteLater()
        self._messages = []
        self._update_empty()

    def set_messages(self, messages: list[dict[str, Any]]) -> None:
        """Show ``messages`` (the active path), reusing widgets whose content is unchanged.

        Only the first differing message and those after it are rebuilt, so finishing a turn or switching a late
        branch does not re-render the whole conversation. A long conversation shows its last messages at once and
        builds the older ones above them a few at a time on later event-loop turns (never one long stall).
        """
        messages = self._annotate(messages)
        n_older = len(self._older)
        if len(messages) < n_older or any(
            not _same(a, b) for a, b in zip(messages[:n_older], self._older, strict=True)
        ):
            self.clear()
            n_older = 0
        else:
            self._older = messages[:n_older]
        shown = messages[n_older:]
        keep = 0
        while keep < len(shown) and keep < len(self._messages) and self._messages[keep].same_content(shown[keep]):
            keep += 1
        if self._streaming is not None and self._streaming in self._messages[keep:]:
            self._stop_stream_state()
        for widget in self._messages[keep:]:
            self._column_layout.removeWidget(widget)
            widget.hide()
            widget.deleteLater()
        del self._messages[keep:]
        for i in range(keep):
            self._messages[i].update_meta(shown[i])
        to_build = shown[keep:]
        if not self._messages and not self._older and len(to_build) > EAGER_MESSAGES:
            self._older = to_build[:-EAGER_MESSAGES]
            to_build = to_build[-EAGER_MESSAGES:]
            self._backfill_timer.start()
        for message in to_build:
            self._append_widget(message)
        self._update_roles()
        self._update_empty()

    def is_backfilling(self) -> bool:
        return bool(self._older)

    def finish_backfill(self) -> None:
        """Build every pending older message now (tests, and before edits that reach that far back)."""
        while self._older:
            self._backfill_one()

    def _backfill_step(self) -> None:
        deadline = time.perf_counter() + BACKFILL_BUDGET_S
        while self._older and time.perf_counter() < deadline:
            self._backfill_one()
        if self._older:
            self._backfill_timer.start()
        else:
            self._update_roles()

    def _backfill_one(self) -> None:
        message = self._older.pop()
        if not self._stick:
            bar = self.verticalScrollBar()
            self._anchor_dist = bar.maximum() - bar.value()  # keep what the user looks at in place
        widget = self._make_widget(message)
        self._column_layout.insertWidget(1, widget)  # 1: after the empty-state widget
        self._messages.insert(0, widget)
        widget.set_actions_pinned(False)

    def add_user_message(self, text: str, user_turn_index: int, *, documents: Any = ()) -> UserMessageWidget:
        widget = self._append_widget(
            {
                "role": "user",
                "content": text,
                "user_turn_index": user_turn_index,
                "branch_index": 0,
                "branch_count": 1,
                "documents": list(documents),
            }
        )
        assert isinstance(widget, UserMessageWidget)
        self._stick = True
        self._update_empty()
        self._update_roles()
        return widget

    def truncate_from_user_turn(self, user_turn_index: int) -> None:
        """Remove user turn ``i`` and everything after it (edit & resend shows the new text in its place)."""
        self.finish_backfill()
        for idx, widget in enumerate(self._messages):
            if widget.role == "user" and int(widget.message.get("user_turn_index") or 0) >= user_turn_index:
                self.truncate(idx)
                return

    def truncate(self, count: int) -> None:
        """Keep the first ``count`` built message widgets (call :meth:`finish_backfill` first to count all)."""
        if self._streaming is not None and self._streaming in self._messages[count:]:
            self._stop_stream_state()
        for widget in self._messages[count:]:
            self._column_layout.removeWidget(widget)
            widget.hide()
            widget.deleteLater()
        del self._messages[count:]
        self._update_roles()
        self._update_empty()

    def remove_last_assistant(self) -> None:
        """Remove the last turn's reply: its assistant messages and tool cards after the last user message."""
        keep = len(self._messages)
        while keep > 0 and self._messages[keep - 1].role in ("assistant", "environment"):
            keep -= 1
        if keep < len(self._messages):
            self.truncate(keep)

    # tool calls ---------------------------------------------------------------------------------------------
    def add_tool_card(self, message: dict[str, Any]) -> ToolCallCard:
        """A card for a call of the running turn (``message``: role "environment", ``tool``, ``pending``)."""
        widget = self._append_widget({"role": "environment", "content": "", **message})
        assert isinstance(widget, ToolCallCard)
        self._stick = True
        self._update_roles()
        self._update_empty()
        return widget

    def tool_card(self, call_id: str) -> ToolCallCard | None:
        return next((w for w in self._messages if isinstance(w, ToolCallCard) and w.call_id == call_id), None)

    def tool_cards(self) -> list[ToolCallCard]:
        return [w for w in self._messages if isinstance(w, ToolCallCard)]

    def drop_stream(self) -> None:
        """Remove the streaming reply (a reply that only called tools: its cards say it all)."""
        widget = self._streaming
        if widget is None:
            return
        self._stop_stream_state()
        if widget in self._messages:
            self._messages.remove(widget)
            self._column_layout.removeWidget(widget)
            widget.hide()
            widget.deleteLater()
            self._update_roles()
            self._update_empty()

    def _append_widget(self, message: dict[str, Any]) -> MessageWidget:
        widget = self._make_widget(message)
        self._column_layout.insertWidget(len(self._messages) + 1, widget)  # +1: the empty-state widget
        self._messages.append(widget)
        return widget

    def _make_widget(self, message: dict[str, Any]) -> MessageWidget:
        widget: MessageWidget
        if message.get("role") == "environment":
            card = ToolCallCard(message, self.column)
            card.stop_requested.connect(self.stop_requested)
            return card
        if message.get("role") == "user":
            user = UserMessageWidget(message, self.column)
            user.edit_submitted.connect(self.edit_requested)
            user.copied.connect(self.copied)
            user.branch.connect(self.branch_requested)
            widget = user
        else:
            reply = AssistantMessageWidget(message, self.column)
            reply.regenerate.connect(self.regenerate_requested)
            reply.reproduce.connect(self.reproduce_requested)
            reply.reproduce_note = lambda data: self.reproduce_note(data)
            reply.retry.connect(self.retry_requested)
            reply.continue_requested.connect(self.continue_requested)
            reply.copied.connect(self.copied)
            reply.branch.connect(self.branch_requested)
            reply.sources.source_clicked.connect(self.source_requested)
            reply.set_regenerate_enabled(False, is_last=False)
            widget = reply
        if isinstance(widget, UserMessageWidget):
            widget.set_editable(not self._busy)
        return widget

    @staticmethod
    def _annotate(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Drop system messages; fill in the user turn index of replies that lack one."""
        shown = [dict(m) for m in messages if m.get("role") in ("user", "assistant", "environment")]
        turn = -1
        for message in shown:
            if message["role"] == "user":
                turn = int(message.get("user_turn_index", turn + 1))
                message["user_turn_index"] = turn
            elif "user_turn_index" not in message:
                message["user_turn_index"] = max(turn, 0)
        return shown

    def _update_roles(self) -> None:
        """Only the last reply can be regenerated/retried and keeps its actions visible."""
        # The last reply (tool cards after it belong to it: a turn stopped while its calls ran).
        last = next((w for w in reversed(self._messages) if w.role != "environment"), None)
        for widget in self._messages:
            if isinstance(widget, AssistantMessageWidget):
                is_last = widget is last
                widget.set_actions_pinned(is_last and not widget.is_streaming())
                widget.set_regenerate_enabled(not self._busy, is_last=is_last)
            elif isinstance(widget, UserMessageWidget):
                widget.set_editable(not self._busy)
                widget.set_actions_pinned(False)

    def _update_empty(self) -> None:
        self.empty.setVisible(not self._messages and not self._older)

    def set_model_name(self, name: str | None, *, loading: bool = False) -> None:
        self.empty.set_model(name, loading=loading)

    def set_busy(self, busy: bool) -> None:
        """While a job runs, actions that would start another one are disabled."""
        self._busy = busy
        self._update_roles()

    # streaming ------------------------------------------------------------------------------------------------
    def begin_assistant(self, *, pending_text: str = "") -> AssistantMessageWidget:
        """Add an assistant message that is waiting for its first token."""
        widget = self._append_widget({"role": "assistant", "content": "", "reasoning": ""})
        assert isinstance(widget, AssistantMessageWidget)
        widget.begin_stream(pending_text=pending_text)
        self._streaming = widget
        self._stick = True
        self._update_roles()
        self._update_empty()
        return widget

    def set_pending_text(self, text: str) -> None:
        if self._streaming is not None:
            self._streaming.set_pending_text(text)

    def append_delta(self, text: str, channel: str = "answer") -> None:
        """Buffer streamed text; rendering happens in :meth:`flush` at most every 16 ms."""
        if self._streaming is None:
            return
        self._streaming.append(text, channel)
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def flush(self) -> None:
        """Render buffered text of the streaming reply (called by the coalescing timer)."""
        self._flush_timer.stop()
        if self._streaming is None:
            return
        self._streaming.flush()
        self.flush_count += 1
        if not self._stick:
            self._show_pill()

    def end_stream(self, message: dict[str, Any] | None = None) -> AssistantMessageWidget | None:
        """Finish the streaming reply; ``message`` (the final reply dict) replaces its metadata."""
        widget = self._streaming
        if self._flush_timer.isActive():
            self.flush()  # text still buffered (a fast reply can end within one 16 ms tick): render it the usual way
        self._flush_timer.stop()
        if widget is None:
            return None
        widget.end_stream()
        if message is not None:
            merged = dict(widget.message)
            merged.update({k: v for k, v in message.items() if v is not None})
            if merged.get("thought_s") is None and widget.reasoning.seconds() is not None:
                merged["thought_s"] = widget.reasoning.seconds()
            content_changed = (merged.get("content") or "") != widget.content()
            widget.update_meta(merged)
            if content_changed:  # the engine's final text differs from what streamed (rare): show the truth
                widget.answer.set_markdown(str(merged.get("content") or ""))
        self._streaming = None
        self._update_roles()
        return widget

    def fail_stream(self, error: str) -> None:
        """The job failed mid-reply: keep what streamed and show the error inline with Retry."""
        if self._streaming is None:
            self.begin_assistant()
        self.end_stream({"error": error})

    def _stop_stream_state(self) -> None:
        self._flush_timer.stop()
        self._streaming = None

    # scrolling ------------------------------------------------------------------------------------------------
    def is_at_bottom(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - 8

    def scroll_to_bottom(self) -> None:
        self._stick = True
        self.pill.hide()
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _on_range_changed(self, _min: int, maximum: int) -> None:
        if self._stick:
            self.verticalScrollBar().setValue(maximum)
        elif self._anchor_dist is not None:
            self.verticalScrollBar().setValue(maximum - self._anchor_dist)
            if not self._older:
                self._anchor_dist = None

    def _on_scrolled(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._stick = value >= bar.maximum() - 8
        if self._stick:
            self.pill.hide()

    def _show_pill(self) -> None:
        self.pill.adjustSize()
        self._place_pill()
        self.pill.show()
        self.pill.raise_()

    def _place_pill(self) -> None:
        viewport = self.viewport()
        self.pill.move((viewport.width() - self.pill.width()) // 2, viewport.height() - self.pill.height() - 14)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._place_pill()

    def apply_theme(self) -> None:
        self.empty.apply_theme()
        self.pill.apply_theme()
        for widget in self._messages:
            widget.apply_theme()
