"""The settings window's field widgets and helpers: the thinking-budget picker, the reasoning choice, hints under
their fields, headings, spin boxes whose text lines up with line edits, and what a model folder tells the window (its
template's own system prompt, its shape for the context choice)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from olmo3.chat.sampling import THINKING_BUDGETS

FIELD_WIDTH = 200
SPIN_TEXT_MARGIN = 8  # with the QSS's padding, what puts a spin box's text where a line edit's is
SAME = object()  # a conversation setting that follows the Sampling page
KEEP_CHOICES: tuple[tuple[str, bool | None], ...] = (
    ("As the model's template does", None),
    ("Keep in context", True),
    ("Drop from context (frees room)", False),
)


class BudgetPicker(QWidget):
    """Off / 1K / 4K / 16K / a number of tokens (and, for a conversation, "Same as the Sampling page")."""

    def __init__(self, value: object, *, allow_same: bool = False, parent: QWidget | None = None):
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(8)
        self.combo = QComboBox(self)
        if allow_same:
            self.combo.addItem("Same as the Sampling page", SAME)
        for name, budget in THINKING_BUDGETS.items():
            self.combo.addItem(name if budget is None else f"{name} tokens", budget)
        self.combo.addItem("Custom…", "custom")
        self.custom = QSpinBox(self)
        self.custom.setRange(1, 1_000_000)
        self.custom.setSingleStep(256)
        self.custom.setSuffix(" tokens")
        self.custom.setValue(value if isinstance(value, int) else 2048)
        row.addWidget(self.combo)
        row.addWidget(self.custom)
        row.addStretch(1)
        self.set_value(value)
        self.combo.currentIndexChanged.connect(lambda _i: self.custom.setVisible(self.combo.currentData() == "custom"))

    def set_value(self, value: object) -> None:
        index = (
            self.combo.findData(value) if value is SAME or value is None or value in THINKING_BUDGETS.values() else -1
        )
        if index < 0:
            index = self.combo.findData("custom")
            if isinstance(value, int):
                self.custom.setValue(value)
        self.combo.setCurrentIndex(index)
        self.custom.setVisible(self.combo.currentData() == "custom")

    def value(self) -> object:
        data = self.combo.currentData()
        return self.custom.value() if data == "custom" else data


def keep_combo(value: object, *, allow_same: bool, parent: QWidget) -> QComboBox:
    combo = QComboBox(parent)
    if allow_same:
        combo.addItem("Same as the Sampling page", SAME)
    for text, keep in KEEP_CHOICES:
        combo.addItem(text, keep)
    combo.setCurrentIndex(max(0, combo.findData(value)))
    combo.setFixedWidth(280)
    return combo


def hint(text: str, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setObjectName("formHint")
    label.setWordWrap(True)
    return label


def heading(text: str, parent: QWidget) -> QLabel:
    label = QLabel(text, parent)
    label.setObjectName("formHeading")
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label


def same_inset(box: QAbstractSpinBox) -> QAbstractSpinBox:
    """Spin boxes ignore the style sheet's padding: inset their text like every other field's (8 px)."""
    edit = box.findChild(QLineEdit)
    if edit is not None:
        edit.setTextMargins(SPIN_TEXT_MARGIN, 0, 0, 0)
    return box


def with_hint(field: QWidget, hint: QLabel, parent: QWidget) -> QWidget:
    """A form row's field with its hint right under it."""
    box = QWidget(parent)
    col = QVBoxLayout(box)
    col.setContentsMargins(0, 0, 0, 0)
    col.setSpacing(4)
    col.addWidget(field, 0, Qt.AlignmentFlag.AlignLeft)
    col.addWidget(hint)
    return box


def template_system_prompt(model_dir: str | Path | None) -> str | None:
    """The system prompt the model's chat template writes when a conversation has none (None if unknown)."""
    if not model_dir:
        return None
    try:
        import jinja2.sandbox

        from olmo3.model.modelinfo import chat_template_text

        template = chat_template_text(Path(model_dir))
        if not template:
            return None
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        marker = "\x00"
        text = env.from_string(template).render(
            messages=[{"role": "user", "content": marker}],
            add_generation_prompt=False,
            eos_token="",
            bos_token="",
        )
    except Exception:  # any template, any error: the hint just doesn't quote it
        return None
    head = "<|im_start|>system\n"
    start = text.find(head)
    if start < 0 or start > text.find(marker):
        return None
    end = text.find("<|im_end|>", start)
    return (text[start + len(head) : end].strip() or None) if end > 0 else None


def model_shape(model_dir: str | None) -> tuple[Any, str]:
    """(olmo3.fit.ModelShape, display name) of a model folder, or (None, "") if it can't be read."""
    if not model_dir:
        return None, ""
    try:
        from desktop.controller import model_display_name
        from olmo3.fit import ModelShape
        from olmo3.model.modelinfo import inspect_model_dir

        info = inspect_model_dir(model_dir)
        return ModelShape.of(info), model_display_name(info, model_dir)
    except Exception:
        return None, ""
