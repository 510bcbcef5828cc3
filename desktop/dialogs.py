"""The window's questions and notes as message boxes: confirm a deletion, a full conversation, About.

Questions are window-modal (sheets on macOS) and name the button that acts, never a bare "OK".
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget


def confirm_delete(parent: QWidget, title: str, text: str) -> bool:
    """A yes/no question whose yes is "Delete"; True when the user chose it."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, title, QMessageBox.StandardButton.Cancel, parent)
    box.setInformativeText(text)
    ok = box.addButton("Delete", QMessageBox.ButtonRole.DestructiveRole)
    box.setWindowModality(Qt.WindowModality.WindowModal)
    box.exec()
    return box.clickedButton() is ok


def ask_overflow(parent: QWidget, event: Any) -> str:
    """The context-overflow policy question (never decided silently): "drop" the oldest turns or "cancel"."""
    what = "context window" if getattr(event, "reason", "context") == "context" else "memory budget"
    box = QMessageBox(
        QMessageBox.Icon.Question,
        "This conversation is full",
        "This message doesn't fit in the model's " + what + ".",
        QMessageBox.StandardButton.Cancel,
        parent,
    )
    box.setInformativeText(
        f"It needs {event.used:,} tokens of history and prompt plus up to {event.max_tokens:,} for the reply, "
        f"but the limit is {event.limit:,}. Olmo can leave out the oldest {event.droppable_turns} turn(s) "
        "(the system prompt is kept) and answer with the rest."
    )
    drop = box.addButton("Drop Oldest Turns", QMessageBox.ButtonRole.AcceptRole)
    box.setWindowModality(Qt.WindowModality.WindowModal)
    box.exec()
    return "drop" if box.clickedButton() is drop else "cancel"


def show_about(parent: QWidget) -> None:
    from desktop import __version__

    QMessageBox.about(
        parent,
        "About Olmo Desktop",
        f"<b>Olmo Desktop</b> {__version__}<br>Ai2's Olmo 3 models, running on this Mac with MLX.",
    )
