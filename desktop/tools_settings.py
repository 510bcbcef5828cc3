"""Settings → Tools: whether models may call tools, the MCP servers and their tools, and ``mcp.json`` itself.

* the switch for tools, the rounds of calls one reply may make, and how long a call may take (saved with Save,
  like every other setting);
* each configured server: how it is doing (running, off, failed with the last lines it wrote to stderr and Retry)
  and an on/off switch; each of its tools: an on/off switch, "Run without asking" (what "Always Allow" in the
  consent question sets), its description and, on demand, its input schema. Switches apply at once (they are kept
  in ``tools-state.json``);
* the ``mcpServers`` JSON other apps use (Claude Desktop, LM Studio, Cursor), checked as it is typed; Apply saves
  it and restarts the servers.

Listing starts the servers, which can take seconds, so it runs in the background (:meth:`AppTools.list_async`) and
the page fills in when it is done. Without an :class:`desktop.tools.AppTools` (tests of other pages) the page shows
only the switches.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop import theme as th
from desktop.settings_fields import same_inset

STATE_TEXT = {"running": "Running", "stopped": "Not started yet", "failed": "Couldn't start", "disabled": "Off"}


def _label(text: str, parent: QWidget, name: str = "", *, wrap: bool = False) -> QLabel:
    label = QLabel(text, parent)
    label.setTextFormat(Qt.TextFormat.PlainText)
    if name:
        label.setObjectName(name)
    label.setWordWrap(wrap)
    return label


class ToolRow(QWidget):
    """One tool: on/off, "Run without asking", its description, and its schema behind a toggle."""

    def __init__(self, info: Any, state: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.info = info
        self.state = state
        col = QVBoxLayout(self)
        col.setContentsMargins(26, 2, 0, 2)
        col.setSpacing(2)
        row = QHBoxLayout()
        row.setSpacing(10)
        self.enabled = QCheckBox(info.name, self)
        self.enabled.setChecked(state.tool_enabled(info.server, info.tool))
        self.enabled.setToolTip("Offer this tool to the model")
        self.always = QCheckBox("Run without asking", self)
        self.always.setChecked(state.always_allow(info.server, info.tool))
        self.always.setToolTip("Calls of this tool run without the consent question")
        self.schema_button = QToolButton(self)
        self.schema_button.setObjectName("reasoningHeader")
        self.schema_button.setText("Schema")
        self.schema_button.setCheckable(True)
        self.schema_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.schema_button.setIcon(th.icon("chevron-right", "muted"))
        self.schema_button.setCursor(Qt.CursorShape.PointingHandCursor)
        row.addWidget(self.enabled)
        row.addStretch(1)
        row.addWidget(self.always)
        row.addWidget(self.schema_button)
        col.addLayout(row)
        if info.description:
            self.description = _label(info.description, self, "toolDescription", wrap=True)
            self.description.setContentsMargins(24, 0, 0, 0)
            col.addWidget(self.description)
        self.schema = QPlainTextEdit(self)
        self.schema.setObjectName("toolSchema")
        self.schema.setReadOnly(True)
        self.schema.setPlainText(json.dumps(info.input_schema, indent=2, ensure_ascii=False))
        lines = min(14, self.schema.toPlainText().count("\n") + 1)
        self.schema.setFixedHeight(lines * self.fontMetrics().height() + 22)
        self.schema.hide()
        col.addWidget(self.schema)
        self.enabled.toggled.connect(lambda on: state.set_tool_enabled(info.server, info.tool, on))
        self.always.toggled.connect(lambda on: state.set_always_allow(info.server, info.tool, on))
        self.schema_button.toggled.connect(self._show_schema)

    def _show_schema(self, shown: bool) -> None:
        self.schema.setVisible(shown)
        self.schema_button.setIcon(th.icon("chevron-down" if shown else "chevron-right", "muted"))


class ServerRow(QFrame):
    """A server: its name, transport and state, an on/off switch, its error with Retry, and its tools."""

    def __init__(self, status: Any, tools: list[Any], state: Any, relist: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("serverRow")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.status = status
        col = QVBoxLayout(self)
        col.setContentsMargins(12, 10, 12, 10)
        col.setSpacing(6)
        head = QHBoxLayout()
        head.setSpacing(8)
        icon = QLabel(self)
        icon.setPixmap(th.pixmap("chip", 16, "muted"))
        self.enabled = QCheckBox(status.name, self)
        self.enabled.setObjectName("serverName")
        self.enabled.setChecked(state.server_enabled(status.name))
        self.enabled.setToolTip("Use this server's tools")
        if status.state == "disabled" and state.server_enabled(status.name):  # "disabled": true in mcp.json
            self.enabled.setChecked(False)
            self.enabled.setEnabled(False)
            self.enabled.setToolTip("Turned off in mcp.json (“disabled”: true)")
        transport = "local program" if status.transport == "stdio" else "HTTP"
        count = f" · {len(tools)} tool{'s' if len(tools) != 1 else ''}" if status.state == "running" else ""
        self.state_label = _label(f"{transport} · {STATE_TEXT.get(status.state, status.state)}{count}", self)
        self.state_label.setObjectName("serverState")
        self.state_label.setProperty("kind", status.state)
        self.retry = QPushButton("Retry", self)
        self.retry.setObjectName("linkButton")
        self.retry.setCursor(Qt.CursorShape.PointingHandCursor)
        self.retry.setVisible(status.state == "failed")
        head.addWidget(icon)
        head.addWidget(self.enabled)
        head.addWidget(self.state_label)
        head.addStretch(1)
        head.addWidget(self.retry)
        col.addLayout(head)
        self.error: QLabel | None = None
        if status.error:
            self.error = _label(status.error, self, "serverError", wrap=True)
            self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            col.addWidget(self.error)
        self.tool_rows = [ToolRow(info, state, self) for info in tools]
        for row in self.tool_rows:
            col.addWidget(row)
        self.enabled.toggled.connect(lambda on: (state.set_server_enabled(status.name, on), relist()))
        self.retry.clicked.connect(relist)


class ToolsPage(QWidget):
    """The Tools page of :class:`desktop.settings_dialog.SettingsDialog`; see the module docstring."""

    def __init__(
        self, settings: Any, tools: Any = None, parent: QWidget | None = None, *, list_now: bool = True
    ) -> None:
        """``list_now``: start the servers and list their tools right away (screenshots pose a listing instead)."""
        super().__init__(parent)
        self.tools = tools
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll_area = scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer.addWidget(scroll)
        body = QWidget(scroll)
        body.setObjectName("settingsScrollBody")
        scroll.setWidget(body)
        self._body = body
        layout = QVBoxLayout(body)
        layout.setContentsMargins(0, 0, 12, 0)
        layout.setSpacing(6)

        layout.addWidget(_heading("Function calling", body))
        self.enabled = QCheckBox("Let models call tools from your MCP servers", body)
        self.enabled.setChecked(bool(settings.tools_enabled))
        layout.addWidget(self.enabled)
        layout.addWidget(
            _hint(
                "Olmo 3 Instruct models call tools in their own format. Before a tool runs you are asked (unless "
                "you let it run without asking); Stop cancels a running call.",
                body,
            )
        )
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.setHorizontalSpacing(14)
        self.rounds = QSpinBox(body)
        self.rounds.setRange(1, 64)
        self.rounds.setValue(int(settings.tool_max_rounds))
        self.rounds.setSuffix(" per reply")
        self.timeout = QDoubleSpinBox(body)
        self.timeout.setRange(1.0, 3600.0)
        self.timeout.setDecimals(0)
        self.timeout.setValue(float(settings.tool_timeout_s))
        self.timeout.setSuffix(" s")
        for box in (self.rounds, self.timeout):
            box.setFixedWidth(140)
            same_inset(box)
        form.addRow("Rounds of calls, at most", self.rounds)
        form.addRow("Stop a call after", self.timeout)
        layout.addSpacing(4)
        layout.addLayout(form)

        layout.addSpacing(14)
        head = QHBoxLayout()
        head.addWidget(_heading("Servers and their tools", body))
        head.addStretch(1)
        self.refresh = QPushButton("Refresh", body)
        head.addWidget(self.refresh)
        layout.addLayout(head)
        self.listing_note = _hint("", body)
        layout.addWidget(self.listing_note)
        self.servers_box = QVBoxLayout()
        self.servers_box.setSpacing(8)
        layout.addLayout(self.servers_box)
        self.server_rows: list[ServerRow] = []

        layout.addSpacing(14)
        layout.addWidget(_heading("mcp.json", body))
        self.editor = QPlainTextEdit(body)
        self.editor.setObjectName("mcpEditor")
        self.editor.setTabChangesFocus(True)
        self.editor.setMinimumHeight(170)
        self.editor.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        layout.addWidget(self.editor)
        row = QHBoxLayout()
        self.config_status = _label("", body, "configStatus", wrap=True)
        self.apply_button = QPushButton("Apply", body)
        self.apply_button.setToolTip("Save mcp.json and restart the servers")
        row.addWidget(self.config_status, 1)
        row.addWidget(self.apply_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(row)
        where = str(tools.config_path) if tools is not None else "mcp.json in the settings folder"
        layout.addWidget(
            _hint(
                "The “mcpServers” JSON that Claude Desktop, LM Studio and Cursor use: a server with “command” "
                f"(and “args”, “env”) runs on this Mac; one with “url” is reached over HTTP. Kept in {where}.",
                body,
            )
        )
        layout.addStretch(1)

        self._saved_text = tools.config_text() if tools is not None else ""
        self.editor.setPlainText(self._saved_text)
        self._check_timer = QTimer(self)
        self._check_timer.setSingleShot(True)
        self._check_timer.setInterval(250)
        self._check_timer.timeout.connect(self.check)
        self.editor.textChanged.connect(self._check_timer.start)
        self.apply_button.clicked.connect(self.apply)
        self.refresh.clicked.connect(lambda: self.list(refresh=True))
        self._listing = False
        if tools is None:
            for widget in (self.refresh, self.editor, self.apply_button):
                widget.setEnabled(False)
            self.listing_note.setText("Tools are not available here.")
        else:
            tools.listed.connect(self.show_listing)
            self.check()
            if list_now:
                self.list()

    # --- mcp.json -------------------------------------------------------------------------------------------
    def check(self) -> bool:
        """Check the editor's JSON; say what is wrong (or how many servers it has). True when it is valid."""
        self._check_timer.stop()
        if self.tools is None:
            return False
        config, error = self.tools.check(self.editor.toPlainText())
        changed = self.editor.toPlainText() != self._saved_text
        if config is None:
            self.config_status.setText(error or "")
            self.config_status.setProperty("kind", "error")
        else:
            n = len(config.servers)
            text = f"Valid: {n} server{'s' if n != 1 else ''}" if n else "Valid, with no servers yet."
            extra = "; " + "; ".join(config.warnings) if config.warnings else ""
            self.config_status.setText(text + extra + (" Apply to use it." if changed else ""))
            self.config_status.setProperty("kind", "ok")
        self.config_status.style().unpolish(self.config_status)
        self.config_status.style().polish(self.config_status)
        self.apply_button.setEnabled(config is not None and changed)
        return config is not None

    def apply(self) -> bool:
        """Save the editor's JSON as mcp.json and list the (restarted) servers."""
        if self.tools is None or not self.check():
            return False
        error = self.tools.save_config(self.editor.toPlainText())
        if error is not None:
            self.config_status.setText(error)
            self.config_status.setProperty("kind", "error")
            return False
        self._saved_text = self.editor.toPlainText()
        self.check()
        self.list()
        return True

    # --- servers --------------------------------------------------------------------------------------------
    def list(self, *, refresh: bool = False) -> None:
        if self.tools is None:
            return
        self._listing = True
        self.refresh.setEnabled(False)
        self.listing_note.setText("Starting the servers and asking for their tools…")
        self.listing_note.show()
        self.tools.list_async(refresh=refresh)

    def is_listing(self) -> bool:
        return self._listing

    def show_listing(self, listing: Any) -> None:
        """Fill in the servers and tools (``desktop.tools.Listing``)."""
        self._listing = False
        self.refresh.setEnabled(True)
        for row in self.server_rows:
            self.servers_box.removeWidget(row)
            row.deleteLater()
        self.server_rows = []
        if listing.error:
            self.listing_note.setText(f"mcp.json can't be used: {listing.error}")
            return
        if not listing.servers:
            self.listing_note.setText("No servers yet: add one to mcp.json below, then Apply.")
            return
        self.listing_note.hide()
        by_server: dict[str, list[Any]] = {}
        for info in listing.tools:
            by_server.setdefault(info.server, []).append(info)
        for status in listing.servers:
            tools = by_server.get(status.name, [])
            row = ServerRow(status, tools, self.tools.state, lambda: self.list(refresh=True), self._body)
            self.servers_box.addWidget(row)
            row.show()  # now, not on the next event-loop turn
            self.server_rows.append(row)

    def values(self) -> dict[str, Any]:
        """The settings this page edits (applied with Save)."""
        return {
            "tools_enabled": self.enabled.isChecked(),
            "tool_max_rounds": self.rounds.value(),
            "tool_timeout_s": float(self.timeout.value()),
        }


def _hint(text: str, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setObjectName("formHint")
    label.setWordWrap(True)
    return label


def _heading(text: str, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setObjectName("formHeading")
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label
