"""Widgets that show rendered Markdown: prose, code panels, and :class:`MarkdownView` which streams.

:class:`MarkdownView` is the piece that keeps streaming cheap. It holds the message's markdown source and a list of
segment widgets. Text that :func:`desktop.markdown.stable_prefix_end` says is complete is rendered once into frozen
segments; only the tail after it is re-rendered on each (coalesced) flush, and an open code fence in the tail is
appended to line by line instead of being re-rendered. So the cost of a flush depends on the size of the tail,
not of the message.
"""

from __future__ import annotations

import math

from pygments.styles import get_style_by_name
from pygments.token import _TokenType
from PySide6.QtCore import QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QColor,
    QDesktopServices,
    QFont,
    QGuiApplication,
    QPalette,
    QTextCharFormat,
    QTextCursor,
    QTextOption,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QSizePolicy,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop import markdown as md
from desktop import theme as th
from olmo3.links import is_safe_url

PROSE_MERGE_LIMIT = 1500  # a frozen prose chunk joins the previous prose segment while that one is shorter
CODE_REHIGHLIGHT_LINES = 300  # a finished streamed code block is re-highlighted whole when at most this long


def document_css(theme: th.Theme, *, muted: bool = False, body_px: int = th.BODY_PX) -> str:
    """The style sheet for rendered markdown inside a QTextDocument (Qt's rich-text CSS subset)."""
    c = theme.colors
    text = c["muted"] if muted else c["text"]
    mono = th.mono_font_family()
    code_px = body_px - 1
    return f"""
p {{ margin-top: 0px; margin-bottom: 10px; line-height: 125%; color: {text}; }}
h1 {{ font-size: {body_px + 6}px; font-weight: 600; margin-top: 16px; margin-bottom: 8px; color: {text}; }}
h2 {{ font-size: {body_px + 4}px; font-weight: 600; margin-top: 14px; margin-bottom: 8px; color: {text}; }}
h3 {{ font-size: {body_px + 2}px; font-weight: 600; margin-top: 12px; margin-bottom: 6px; color: {text}; }}
h4, h5, h6 {{ font-size: {body_px}px; font-weight: 600; margin-top: 10px; margin-bottom: 6px; color: {text}; }}
ul, ol {{ margin-top: 0px; margin-bottom: 10px; -qt-list-indent: 1; }}
li {{ margin-bottom: 3px; line-height: 125%; color: {text}; }}
code {{ font-family: '{mono}'; font-size: {code_px}px; background-color: {c["inline_code_bg"]}; color: {text}; }}
pre {{ font-family: '{mono}'; font-size: {code_px}px; background-color: {c["code_bg"]}; margin-bottom: 10px; }}
a {{ color: {c["link"]}; text-decoration: none; }}
blockquote {{ color: {c["muted"]}; margin-left: 14px; margin-bottom: 10px; font-style: italic; }}
table {{ border-collapse: collapse; border: 1px solid {c["border_strong"]}; margin-bottom: 12px; }}
th {{ background-color: {c["code_header"]}; font-weight: 600; color: {text}; text-align: left;
      border-width: 1px; border-style: solid; border-color: {c["border_strong"]}; }}
td {{ color: {text}; border-width: 1px; border-style: solid; border-color: {c["border_strong"]}; }}
hr {{ color: {c["border"]}; }}
del {{ color: {c["muted"]}; }}
"""


def open_link_if_safe(url: QUrl) -> bool:
    """Hand ``url`` to the system only if it is on the allow-list; True when it was opened."""
    if not is_safe_url(bytes(url.toEncoded().data()).decode("ascii", "replace")):  # encoded: %20 stays %20
        return False
    return bool(QDesktopServices.openUrl(url))


class _PassWheelMixin:
    """Message widgets sit inside the chat's scroll area: vertical wheel events must reach it."""

    def wheelEvent(self, event: QWheelEvent) -> None:
        if abs(event.angleDelta().y()) >= abs(event.angleDelta().x()):
            event.ignore()
            return
        super().wheelEvent(event)  # type: ignore[misc]


class ProseView(_PassWheelMixin, QTextBrowser):
    """Selectable, link-aware rendered HTML whose height always equals its content (no inner scrolling)."""

    def __init__(self, parent: QWidget | None = None, *, muted: bool = False, body_px: int = th.BODY_PX) -> None:
        super().__init__(parent)
        self._muted = muted
        self._body_px = body_px
        self._html = ""
        self.setObjectName("prose")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # Clicks open only http, https and mailto links (olmo3.links); the renderer makes no others, this is the
        # last check before the system opens anything.
        self.setOpenLinks(False)
        self.anchorClicked.connect(open_link_if_safe)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.viewport().setAutoFillBackground(False)
        self.setAutoFillBackground(False)
        doc = self.document()
        doc.setDocumentMargin(0)
        doc.setUndoRedoEnabled(False)
        font = th.ui_font(body_px)
        doc.setDefaultFont(font)
        self.document().documentLayout().documentSizeChanged.connect(self._fit_height)
        self.apply_theme()
        self.setFixedHeight(max(1, math.ceil(self.fontMetrics().lineSpacing())))

    def apply_theme(self) -> None:
        theme = th.current()
        self.document().setDefaultStyleSheet(document_css(theme, muted=self._muted, body_px=self._body_px))
        pal = self.palette()
        pal.setColor(QPalette.ColorRole.Text, theme.qcolor("muted" if self._muted else "text"))
        pal.setColor(QPalette.ColorRole.Base, QColor(0, 0, 0, 0))
        pal.setColor(QPalette.ColorRole.Highlight, theme.qcolor("selection"))
        pal.setColor(QPalette.ColorRole.HighlightedText, theme.qcolor("text"))
        self.setPalette(pal)
        if self._html:
            self.set_html(self._html)

    def set_html(self, html: str) -> None:
        """Replace the content; trims the outer margins so segments stack with even spacing."""
        self._html = html
        self.setHtml(html)
        doc = self.document()
        first = doc.firstBlock()
        last = doc.lastBlock()
        if first.isValid():
            cursor = QTextCursor(first)
            fmt = first.blockFormat()
            fmt.setTopMargin(0)
            cursor.setBlockFormat(fmt)
        if last.isValid():
            cursor = QTextCursor(last)
            fmt = last.blockFormat()
            fmt.setBottomMargin(0)
            cursor.setBlockFormat(fmt)

    def html_source(self) -> str:
        return self._html

    def _fit_height(self, size) -> None:
        height = max(1, math.ceil(size.height()))
        if height != self.height():
            self.setFixedHeight(height)

    def sizeHint(self) -> QSize:
        return QSize(400, self.height())

    def minimumSizeHint(self) -> QSize:
        return QSize(80, self.height())


# --------------------------------------------------------------------------------------------------- code panels

_format_cache: dict[tuple[str, str], QTextCharFormat] = {}


def _char_format(style_name: str, ttype: _TokenType) -> QTextCharFormat:
    key = (style_name, str(ttype))
    cached = _format_cache.get(key)
    if cached is not None:
        return cached
    style = get_style_by_name(style_name)
    info = style.style_for_token(ttype)
    fmt = QTextCharFormat()
    if info.get("color"):
        fmt.setForeground(QColor("#" + info["color"]))
    if info.get("bold"):
        fmt.setFontWeight(QFont.Weight.DemiBold)
    if info.get("italic"):
        fmt.setFontItalic(True)
    _format_cache[key] = fmt
    return fmt


class CodeView(_PassWheelMixin, QPlainTextEdit):
    """Read-only, unwrapped, highlighted code whose height fits its lines (a horizontal bar if lines are long)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("codeView")
        self.setReadOnly(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.setWordWrapMode(QTextOption.WrapMode.NoWrap)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setFont(th.mono_font(th.CODE_PX))
        self.document().setDocumentMargin(12)
        self.document().setUndoRedoEnabled(False)
        self.horizontalScrollBar().rangeChanged.connect(self._fit_height)
        self.blockCountChanged.connect(self._fit_height)
        self._code = ""
        self._language = ""
        self._tail_start = 0  # document position where the partial (unhighlighted) last line starts
        self._done_lines = 0  # complete lines already highlighted while streaming
        self._apply_palette()
        self._fit_height()

    # content -------------------------------------------------------------------------------------------------
    def set_code(self, code: str, language: str) -> None:
        """Replace everything and highlight it whole (finished blocks, theme changes)."""
        self._code = code
        self._language = language
        self.document().clear()
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()  # one layout pass for the whole block, not one per token
        self._insert_highlighted(cursor, code)
        cursor.endEditBlock()
        self._done_lines = code.count("\n")
        self._tail_start = self.document().characterCount() - 1
        self._fit_height()

    def stream_code(self, code: str, language: str) -> None:
        """``code`` extends the previous value: highlight only new complete lines, show the partial one plainly."""
        if not code.startswith(self._code) or language != self._language:
            self.set_code(code, language)
            return
        self._code = code
        lines = code.split("\n")
        complete = lines[:-1]
        partial = lines[-1]
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()
        cursor.setPosition(self._tail_start)
        cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
        cursor.removeSelectedText()
        if len(complete) > self._done_lines:
            new = "\n".join(complete[self._done_lines :]) + "\n"
            self._insert_highlighted(cursor, new)
            self._done_lines = len(complete)
        self._tail_start = cursor.position()
        cursor.insertText(partial, QTextCharFormat())
        cursor.endEditBlock()

    def finish_stream(self) -> None:
        """Drop the empty partial line a stream leaves after the last newline."""
        if self._code.endswith("\n"):
            self._code = self._code[:-1]
            cursor = QTextCursor(self.document())
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.deletePreviousChar()

    def code(self) -> str:
        return self._code

    def _insert_highlighted(self, cursor: QTextCursor, code: str) -> None:
        style = th.current().pygments_style
        for ttype, value in md.highlight_tokens(code, self._language):
            cursor.insertText(value, _char_format(style, ttype))

    # look ----------------------------------------------------------------------------------------------------
    def _apply_palette(self) -> None:
        theme = th.current()
        pal = self.palette()
        pal.setColor(QPalette.ColorRole.Base, theme.qcolor("code_bg"))
        pal.setColor(QPalette.ColorRole.Text, theme.qcolor("text"))
        pal.setColor(QPalette.ColorRole.Highlight, theme.qcolor("selection"))
        pal.setColor(QPalette.ColorRole.HighlightedText, theme.qcolor("text"))
        self.setPalette(pal)

    def apply_theme(self) -> None:
        self._apply_palette()
        if self._code:
            self.set_code(self._code, self._language)

    def _fit_height(self, *_args: object) -> None:
        lines = max(1, self.document().blockCount())
        first = self.document().firstBlock()
        line_h = self.blockBoundingRect(first).height() if first.isValid() else 0
        if line_h <= 0:
            line_h = self.fontMetrics().lineSpacing()
        line_h = math.ceil(line_h)
        margin = int(self.document().documentMargin())
        height = lines * line_h + 2 * margin + 2
        bar = self.horizontalScrollBar()
        if bar.maximum() > 0:
            height += bar.sizeHint().height()
        if height != self.height():
            self.setFixedHeight(height)


class CodePanel(QFrame):
    """A rounded code panel: language label and Copy button over a :class:`CodeView`.

    Signals:
        copied(str): the code that was put on the clipboard.
    """

    copied = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("codePanel")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(1, 1, 1, 1)
        layout.setSpacing(0)
        header = QWidget(self)
        header.setObjectName("codeHeader")
        header.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        row = QHBoxLayout(header)
        row.setContentsMargins(12, 4, 6, 4)
        row.setSpacing(6)
        self.language_label = QLabel("code", header)
        self.language_label.setObjectName("codeLanguage")
        self.copy_button = QToolButton(header)
        self.copy_button.setObjectName("codeCopy")
        self.copy_button.setText("Copy")
        self.copy_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.copy_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.copy_button.clicked.connect(self.copy_code)
        row.addWidget(self.language_label)
        row.addStretch(1)
        row.addWidget(self.copy_button)
        self.view = CodeView(self)
        layout.addWidget(header)
        layout.addWidget(self.view)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._reset_timer = QTimer(self)
        self._reset_timer.setSingleShot(True)
        self._reset_timer.setInterval(1500)
        self._reset_timer.timeout.connect(self._reset_copy_label)
        self._reset_copy_label()

    def set_code(self, code: str, language: str) -> None:
        self.language_label.setText(md.display_language(language))
        self.view.set_code(code, language)

    def stream_code(self, code: str, language: str) -> None:
        self.language_label.setText(md.display_language(language))
        self.view.stream_code(code, language)

    def copy_code(self) -> None:
        QGuiApplication.clipboard().setText(self.view.code())
        self.copy_button.setText("Copied")
        self.copy_button.setIcon(th.icon("check", "success"))
        self._reset_timer.start()
        self.copied.emit(self.view.code())

    def _reset_copy_label(self) -> None:
        self.copy_button.setText("Copy")
        self.copy_button.setIcon(th.icon("copy", "muted"))

    def apply_theme(self) -> None:
        self._reset_copy_label()
        self.view.apply_theme()


# ------------------------------------------------------------------------------------------------ MarkdownView


class MarkdownView(QWidget):
    """Rendered markdown made of stacked segments; supports whole renders and cheap streaming appends.

    Use :meth:`set_markdown` for finished text, or :meth:`append` + :meth:`flush` (the chat view calls ``flush`` at
    most ~60 times a second) + :meth:`finish` while streaming.
    """

    def __init__(self, parent: QWidget | None = None, *, muted: bool = False, body_px: int = th.BODY_PX) -> None:
        super().__init__(parent)
        self._muted = muted
        self._body_px = body_px
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(12)
        self._text = ""
        self._stable_end = 0  # text[:_stable_end] is rendered into frozen segments
        self._frozen: list[QWidget] = []
        self._last_prose_source = ""  # source of the last frozen prose segment (to merge small chunks)
        self._tail: QWidget | None = None
        self._tail_kind = ""  # "prose" | "code" | ""
        self._rendered_len = 0  # len(text) at the last flush
        self._streaming = False
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)

    # public ----------------------------------------------------------------------------------------------------
    def text(self) -> str:
        return self._text

    def is_streaming(self) -> bool:
        return self._streaming

    def segment_count(self) -> int:
        return len(self._frozen) + (1 if self._tail is not None else 0)

    def set_markdown(self, text: str) -> None:
        """Render ``text`` completely (not streaming)."""
        self._clear()
        self._text = text
        self._streaming = False
        self._add_blocks(md.render_blocks(text), merge=False)
        self._stable_end = len(text)
        self._rendered_len = len(text)

    def begin_stream(self, initial: str = "") -> None:
        self._clear()
        self._text = initial
        self._streaming = True
        self.flush()

    def append(self, chunk: str) -> None:
        """Buffer streamed text; nothing is rendered until :meth:`flush`."""
        self._text += chunk

    def has_pending(self) -> bool:
        return len(self._text) != self._rendered_len

    def flush(self) -> None:
        """Render what arrived since the last flush: freeze newly complete blocks, re-render only the tail."""
        if not self.has_pending() and self._tail is not None:
            return
        text = self._text
        boundary = md.stable_prefix_end(text, self._stable_end)
        if boundary > self._stable_end:
            blocks = md.render_blocks(text[self._stable_end : boundary])
            if self._tail_kind == "code" and blocks and isinstance(blocks[0], md.CodeBlock):
                self._freeze_code_tail(blocks[0])  # its fence closed: keep the panel, don't rebuild it
                blocks = blocks[1:]
            else:
                self._drop_tail()
            self._add_blocks(blocks, merge=True)
            self._stable_end = boundary
        self._render_tail(text[self._stable_end :])
        self._rendered_len = len(text)

    def finish(self) -> None:
        """The stream ended: render the tail as final blocks (closing any open code fence)."""
        if not self._streaming:
            return
        self._streaming = False
        tail = self._text[self._stable_end :]
        fence = md.open_fence_tail(tail) if self._tail_kind == "code" else None
        if fence is not None:
            language, code = fence
            self._freeze_code_tail(md.CodeBlock(code=code.rstrip("\n"), language=language))
            self._stable_end = self._rendered_len = len(self._text)
            return
        self._drop_tail()
        if tail.strip():
            self._add_blocks(md.render_blocks(tail), merge=True)
        self._stable_end = len(self._text)
        self._rendered_len = len(self._text)

    def apply_theme(self) -> None:
        for widget in self._segments():
            widget.apply_theme()  # type: ignore[attr-defined]

    def code_panels(self) -> list[CodePanel]:
        return [w for w in self._segments() if isinstance(w, CodePanel)]

    def prose_views(self) -> list[ProseView]:
        return [w for w in self._segments() if isinstance(w, ProseView)]

    # internals -------------------------------------------------------------------------------------------------
    def _segments(self) -> list[QWidget]:
        return self._frozen + ([self._tail] if self._tail is not None else [])

    def _clear(self) -> None:
        for widget in self._segments():
            self._layout.removeWidget(widget)
            widget.deleteLater()
        self._frozen = []
        self._tail = None
        self._tail_kind = ""
        self._stable_end = 0
        self._rendered_len = 0
        self._last_prose_source = ""

    def _drop_tail(self) -> None:
        if self._tail is not None:
            self._layout.removeWidget(self._tail)
            self._tail.hide()
            self._tail.deleteLater()
        self._tail = None
        self._tail_kind = ""

    def _freeze_code_tail(self, block: md.CodeBlock) -> None:
        """The streamed code panel becomes final: re-highlight it whole once (lexer state can now span the block)
        unless it is so long that this would stall the GUI, in which case the streamed colouring stays."""
        panel = self._tail
        assert isinstance(panel, CodePanel)
        if block.code.count("\n") <= CODE_REHIGHLIGHT_LINES:
            panel.set_code(block.code, block.language)
        else:
            panel.view.finish_stream()
        self._frozen.append(panel)
        self._tail = None
        self._tail_kind = ""
        self._last_prose_source = ""

    def _new_prose(self) -> ProseView:
        return ProseView(self, muted=self._muted, body_px=self._body_px)

    def _add_blocks(self, blocks: list[md.Block], *, merge: bool) -> None:
        for block in blocks:
            if isinstance(block, md.CodeBlock):
                panel = CodePanel(self)
                panel.set_code(block.code, block.language)
                self._layout.insertWidget(len(self._frozen), panel)
                self._frozen.append(panel)
                self._last_prose_source = ""
                continue
            last = self._frozen[-1] if self._frozen else None
            if (
                merge
                and isinstance(last, ProseView)
                and self._last_prose_source
                and len(self._last_prose_source) < PROSE_MERGE_LIMIT
            ):
                # Re-render the previous (bounded-size) prose segment together with the new chunk.
                # A blank line keeps the two chunks separate blocks (a table or list can't continue a paragraph).
                source = self._last_prose_source.rstrip("\n") + "\n\n" + block.source
                last.set_html(md.to_html(source))
                self._last_prose_source = source
                continue
            view = self._new_prose()
            view.set_html(block.html)
            self._layout.insertWidget(len(self._frozen), view)
            self._frozen.append(view)
            self._last_prose_source = block.source if block.source.endswith("\n") else block.source + "\n"

    def _render_tail(self, tail: str) -> None:
        if not tail:
            self._drop_tail()
            return
        fence = md.open_fence_tail(tail)
        if fence is not None:
            language, code = fence
            if self._tail_kind != "code":
                self._drop_tail()
                panel = CodePanel(self)
                self._layout.addWidget(panel)
                self._tail = panel
                self._tail_kind = "code"
            assert isinstance(self._tail, CodePanel)
            self._tail.stream_code(code, language)
            return
        if self._tail_kind != "prose":
            self._drop_tail()
            view = self._new_prose()
            self._layout.addWidget(view)
            self._tail = view
            self._tail_kind = "prose"
        assert isinstance(self._tail, ProseView)
        self._tail.set_html(md.to_html(tail))
