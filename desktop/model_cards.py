"""The model picker's cards (one model each, with its fit badge, its actions, and its download's progress or error)
and its two questions (confirm; copy a folder or use it in place).

A card never grows wider than the list it sits in: the name is elided (full name in the tooltip), every other
line wraps, and long unbroken words (repo ids, URLs, paths) get break opportunities after ``/``, ``.`` and ``-``,
so an error message from the network wraps instead of pushing the badge and the buttons off the right edge.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QWidget,
)

from desktop.elided import ElidedLabel
from desktop.models import DownloadState, describe_download

DESCRIPTIONS = {
    "Instruct": "Everyday assistant: quick, direct answers.",
    "Think": "Shows its reasoning first. Slower, better at maths and code.",
    "RL-Zero": "Research model trained with RL from the base model; no chat tuning.",
    "RL-Zero Code": "Research model trained with RL from the base model; no chat tuning.",
    "RL-Zero Math": "Research model trained with RL from the base model; no chat tuning.",
}

_ZWSP = "\u200b"  # a zero-width space: a line may break here, nothing is drawn
_LONG_WORD = re.compile(r"\S{24,}")


def breakable(text: str) -> str:
    """``text`` with break opportunities inside long words (after ``/ . - _ : ?``), so a QLabel can wrap it."""
    return _LONG_WORD.sub(lambda m: re.sub(r"([/.\-_:?&=])", "\\1" + _ZWSP, m.group(0)), text)


def fit_text(fit: Any) -> str:
    """ "Fits · 4.6 GB of 24 GB" for a ``olmo3.hub.MemoryFit``."""
    from olmo3.units import format_bytes

    word = {"fits": "Fits", "tight": "Tight", "wont_fit": "Won't fit"}.get(fit.verdict, "?")
    return f"{word} · {format_bytes(fit.needed_bytes)} of {format_bytes(fit.budget_bytes)}"


def wont_fit_reason(fit: Any) -> str:
    """One sentence for a card whose model will not fit: the numbers, and what to choose instead."""
    from olmo3.units import format_bytes

    return (
        f"Needs about {format_bytes(fit.needed_bytes)} of memory but this Mac has {format_bytes(fit.budget_bytes)} "
        "for models: choose a smaller model or quantization."
    )


def pretty_name(name: str) -> str:
    """ "mlx-community/Olmo-3-7B-Instruct-4bit" → "Olmo 3 7B Instruct 4bit"."""
    base = name.split("/")[-1]
    return base.replace("Olmo-3.1-", "Olmo 3.1 ").replace("Olmo-3-", "Olmo 3 ").replace("-", " ")


def title_for(repo_id: str) -> str:
    """The catalog's title for ``repo_id`` ("Olmo 3 7B Think · 4-bit"), else its pretty name."""
    from olmo3.hub import catalog_entry

    entry = catalog_entry(repo_id)
    return entry.title if entry is not None else pretty_name(repo_id)


_QUANT_SUFFIX = re.compile(r"(?:[-_]MLX)?(?:[-_](?:\d+bit|bf16|bfloat16|fp16|float16))?(?:[-_]MLX)?$", re.I)


def display_name(repo_id: str, quant_label: str) -> str:
    """ "lmstudio-community/Olmo-3.1-32B-Instruct-MLX-4bit", "4-bit" → "Olmo 3.1 32B Instruct · 4-bit"."""
    base = repo_id.split("/")[-1]
    stripped = _QUANT_SUFFIX.sub("", base) or base
    return f"{pretty_name(stripped)} · {quant_label}"


def _wrapping_label(parent: QWidget, object_name: str) -> QLabel:
    label = QLabel(parent)
    label.setObjectName(object_name)
    label.setWordWrap(True)
    # Wrapped text may take any width the card gives it (not its unwrapped width); its height follows the width.
    policy = label.sizePolicy()
    policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
    policy.setHeightForWidth(True)
    label.setSizePolicy(policy)
    label.setMinimumWidth(40)
    return label


class FitBadge(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("fitBadge")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)

    def set_fit(self, fit: Any | None) -> None:
        if fit is None:
            self.setText("Size unknown")
            self.setProperty("verdict", "unknown")
            self.setToolTip("Olmo Desktop could not read this model's configuration.")
        else:
            self.setText(fit_text(fit))
            self.setProperty("verdict", fit.verdict)
            self.setToolTip(fit.message)
        self.style().unpolish(self)
        self.style().polish(self)


class ModelCard(QFrame):
    """One model: name, description, meta line, fit badge, actions, a note (why it won't fit, what went wrong) and
    (while downloading) progress. See the module docstring for how it stays inside the list's width."""

    def __init__(self, key: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.key = key  # repo id or local name
        self.setObjectName("modelCard")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        grid = QGridLayout(self)
        grid.setContentsMargins(16, 12, 12, 12)
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(4)
        name_row = QHBoxLayout()
        name_row.setSpacing(8)
        self.name = ElidedLabel("", self)
        self.name.setObjectName("cardName")
        self.loaded_badge = QLabel("Loaded", self)
        self.loaded_badge.setObjectName("loadedBadge")
        self.loaded_badge.hide()
        self.badge = FitBadge(self)
        name_row.addWidget(self.name, 1)
        name_row.addWidget(self.loaded_badge)
        name_row.addWidget(self.badge)
        self.description = _wrapping_label(self, "cardDescription")
        self.meta = _wrapping_label(self, "cardMeta")
        self.note = _wrapping_label(self, "cardNote")  # why it won't fit; a failed download's message
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.note.hide()
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.progress_label = _wrapping_label(self, "cardMeta")
        self.progress.hide()
        self.progress_label.hide()
        self.buttons = QHBoxLayout()
        self.buttons.setSpacing(6)
        grid.addLayout(name_row, 0, 0, 1, 2)
        grid.addWidget(self.description, 1, 0)
        grid.addWidget(self.meta, 2, 0)
        grid.addLayout(self.buttons, 1, 1, 2, 1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom)
        grid.addWidget(self.note, 3, 0, 1, 2)
        grid.addWidget(self.progress, 4, 0, 1, 2)
        grid.addWidget(self.progress_label, 5, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        self._button_widgets: dict[str, QPushButton] = {}

    def set_name(self, text: str) -> None:
        self.name.setText(text)
        self.name.setToolTip(text)

    def set_note(self, text: str | None, *, error: bool = False) -> None:
        """A wrapped line under the meta line (None hides it); ``error`` draws it in the danger colour."""
        self.note.setVisible(bool(text))
        self.note.setText(breakable(text or ""))
        self.note.setProperty("error", "true" if error else "false")
        self.note.style().unpolish(self.note)
        self.note.style().polish(self.note)

    def set_loaded(self, loaded: bool) -> None:
        self.loaded_badge.setVisible(loaded)
        self.setProperty("loaded", "true" if loaded else "false")
        self.style().unpolish(self)
        self.style().polish(self)

    def add_button(
        self, key: str, text: str, slot: Callable[[], object], *, kind: str = "secondaryButton"
    ) -> QPushButton:
        button = QPushButton(text, self)
        button.setObjectName(kind)
        button.setAutoDefault(False)
        button.setCursor(Qt.CursorShape.PointingHandCursor)
        button.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)

        # clicked(bool) would fill the slot's first default argument; call it without arguments instead.
        # (A GUI-thread signal, so a closure is safe here.)
        def clicked(_checked: bool = False) -> None:
            slot()

        button.clicked.connect(clicked)
        self.buttons.addWidget(button)
        self._button_widgets[key] = button
        return button

    def button(self, key: str) -> QPushButton | None:
        return self._button_widgets.get(key)

    def button_keys(self) -> list[str]:
        return list(self._button_widgets)

    def set_download(self, state: DownloadState | None) -> None:
        """Progress while a download (or its quantizing) runs or is paused; a failure goes to the note."""
        if state is None or state.status in ("completed", "cancelled"):
            self.progress.hide()
            self.progress_label.hide()
            return
        if state.status == "failed":
            self.progress.hide()
            self.progress_label.hide()
            self.set_note(state.message, error=True)
            self.note.setToolTip(state.detail)
            return
        self.progress.show()
        self.progress_label.show()
        self.progress.setValue(int(state.fraction * 1000))
        self.progress_label.setText(breakable(describe_download(state)))


def confirm_box(parent: QWidget, title: str, text: str) -> bool:
    """A yes/no question whose yes is "Delete" (titles that start with "Delete") or "OK"."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, title, QMessageBox.StandardButton.Cancel, parent)
    box.setInformativeText(text)
    ok = box.addButton("Delete" if title.startswith("Delete") else "OK", QMessageBox.ButtonRole.DestructiveRole)
    box.exec()
    return box.clickedButton() is ok


def ask_copy_or_link(parent: QWidget, folder: str) -> bool | None:
    """How to add a (checked) model folder: False copies it, True uses it in place, None cancels."""
    box = QMessageBox(
        QMessageBox.Icon.Question,
        "Add model folder",
        "How should Olmo Desktop use this folder?",
        QMessageBox.StandardButton.Cancel,
        parent,
    )
    box.setInformativeText(
        f"{folder}\n\nCopying keeps working if the folder moves; using it in place saves disk space."
    )
    copy = box.addButton("Copy", QMessageBox.ButtonRole.AcceptRole)
    link = box.addButton("Use in place", QMessageBox.ButtonRole.AcceptRole)
    box.exec()
    if box.clickedButton() is copy:
        return False
    if box.clickedButton() is link:
        return True
    return None


def when_text(iso: str | None) -> str:
    """ "30 Nov 2026, 08:34" in local time for an ISO timestamp ("never" for None)."""
    if not iso:
        return "never"
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%-d %b %Y, %H:%M")
    except ValueError:
        return iso


def search_status(results: Any) -> str:
    """The line under "On Hugging Face": what the list is, or when it was fetched (and that it is old, offline)."""
    if results is None:
        return "Other Olmo-3 conversions published on Hugging Face, with their sizes and whether they fit."
    if not results.error:
        return f"Last updated {when_text(results.fetched_at)}."
    if results.fetched_at:
        return (
            f"Couldn't reach Hugging Face, so this is the list from {when_text(results.fetched_at)}. "
            "Check your connection and search again."
        )
    return "Couldn't reach Hugging Face. Check your connection and search again."
