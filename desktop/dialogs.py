"""The window's questions and notes as message boxes: confirm a deletion, a full conversation, a model that won't
fit in memory, About.

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
        f"It needs {event.used:,} tokens of history and prompt plus at least {event.max_tokens:,} for a reply, "
        f"but the limit is {event.limit:,}. Olmo can leave out the oldest {event.droppable_turns} turn(s) "
        "and answer with the rest; the system prompt is kept."
    )
    drop = box.addButton("Drop Oldest Turns", QMessageBox.ButtonRole.AcceptRole)
    box.setWindowModality(Qt.WindowModality.WindowModal)
    box.exec()
    return "drop" if box.clickedButton() is drop else "cancel"


def load_anyway_box(parent: QWidget, event: Any, name: str) -> tuple[QMessageBox, Any]:
    """The question for a model that won't fit (``olmo3.chat.events.ModelWontFit``), and its "Load Anyway" button."""
    from olmo3.units import format_bytes

    box = QMessageBox(
        QMessageBox.Icon.Warning,
        "This model won't fit in memory",
        f"{name} needs more memory than this Mac can give it.",
        QMessageBox.StandardButton.Cancel,
        parent,
    )
    needed, budget = format_bytes(event.needed_bytes), format_bytes(event.budget_bytes)
    weights, kv = format_bytes(event.weight_bytes), format_bytes(event.kv_bytes)
    runtime = format_bytes(max(0, event.needed_bytes - event.weight_bytes - event.kv_bytes))
    without_context = event.needed_bytes - event.kv_bytes
    advice = (
        "Even a short context won't help: choose a smaller model or quantization."
        if without_context > event.budget_bytes
        else "Choose a shorter context for it in Settings → Model, or a smaller quantization."
    )
    box.setInformativeText(
        f"It needs about {needed}: {weights} of weights, {kv} for a conversation of {event.context_tokens:,} "
        f"tokens and {runtime} for the runtime. About {budget} is available for models. {advice}\n\n"
        "Loaded anyway, it can slow this Mac down and push other apps out of memory."
    )
    load = box.addButton("Load Anyway", QMessageBox.ButtonRole.AcceptRole)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.setWindowModality(Qt.WindowModality.WindowModal)
    return box, load


def ask_load_anyway(parent: QWidget, event: Any, name: str) -> bool:
    """True when the user chose "Load Anyway" for a model that won't fit."""
    box, load = load_anyway_box(parent, event, name)
    box.exec()
    return box.clickedButton() is load


def show_about(parent: QWidget) -> None:
    from desktop import __version__

    QMessageBox.about(
        parent,
        "About Olmo Desktop",
        f"<b>Olmo Desktop</b> {__version__}<br>Ai2's Olmo 3 models, running on this Mac with MLX.",
    )
