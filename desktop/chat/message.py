"""What every message widget shares: the hover action row, the message dict it shows, and its tool buttons."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QToolButton, QWidget

from desktop import theme as th


def tool_button(icon_name: str, tip: str, parent: QWidget, object_name: str = "msgAction") -> QToolButton:
    """A small borderless icon button of a message's action row (copy, edit, regenerate, ‹ ›)."""
    button = QToolButton(parent)
    button.setObjectName(object_name)
    button.setIcon(th.icon(icon_name, "muted"))
    button.setIconSize(QSize(15, 15))
    button.setToolTip(tip)
    button.setAccessibleName(tip)
    button.setCursor(Qt.CursorShape.PointingHandCursor)
    button.setAutoRaise(True)
    button.setProperty("iconName", icon_name)
    return button


def retheme_tools(widget: QWidget) -> None:
    """Redraw the icons of every :func:`tool_button` under ``widget`` in the current theme's colours."""
    for button in widget.findChildren(QToolButton):
        name = button.property("iconName")
        if name:
            button.setIcon(th.icon(str(name), str(button.property("iconColor") or "muted")))


class MessageWidget(QWidget):
    """Common parts: the hover action row and the message dict it shows."""

    def __init__(self, message: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message = dict(message)
        self.action_row = QWidget(self)
        self.action_row.setObjectName("messageActions")
        policy = self.action_row.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        self.action_row.setSizePolicy(policy)
        self._pinned_actions = False
        self._hover_buttons: list[QWidget] = []
        self.setAttribute(Qt.WidgetAttribute.WA_Hover, True)

    @property
    def role(self) -> str:
        return str(self.message.get("role", ""))

    def content(self) -> str:
        return str(self.message.get("content", ""))

    def _register_hover(self, *buttons: QWidget) -> None:
        for button in buttons:
            policy = button.sizePolicy()
            policy.setRetainSizeWhenHidden(True)
            button.setSizePolicy(policy)
            self._hover_buttons.append(button)
        self._show_hover(False)

    def _show_hover(self, visible: bool) -> None:
        for button in self._hover_buttons:
            button.setVisible(visible and not button.property("forceHidden"))

    def set_actions_pinned(self, pinned: bool) -> None:
        """The last reply keeps its actions visible; the others show them on hover."""
        self._pinned_actions = pinned
        self._show_hover(pinned or self.underMouse())

    def enterEvent(self, event) -> None:
        self._show_hover(True)
        super().enterEvent(event)

    def leaveEvent(self, event) -> None:
        self._show_hover(self._pinned_actions)
        super().leaveEvent(event)

    def hover_buttons_visible(self) -> bool:
        return any(b.isVisible() for b in self._hover_buttons)

    def same_content(self, message: dict[str, Any]) -> bool:
        return (
            message.get("role") == self.message.get("role")
            and (message.get("content") or "") == (self.message.get("content") or "")
            and (message.get("reasoning") or "") == (self.message.get("reasoning") or "")
        )

    def update_meta(self, message: dict[str, Any]) -> None:
        self.message = dict(message)

    def apply_theme(self) -> None:
        retheme_tools(self)
