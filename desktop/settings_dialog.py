"""The settings window: chat (system prompts), the model (context length, start-up), sampling with Olmo-3 presets,
tools (MCP servers: :mod:`desktop.tools_settings`), memory & storage, appearance, and the local server (an
OpenAI-compatible API for other programs on this computer).

It edits a copy of :class:`desktop.settings.Settings` and, when a conversation is open, that conversation's own
system prompt, thinking budget and earlier-reasoning choice; :meth:`SettingsDialog.result_settings`,
:meth:`conversation_prompt` and :meth:`conversation_sampling` give the outcome after Save.

**System prompts, one story.** Every conversation has its own system prompt, fixed when it starts: the prompt for new
conversations (Chat page) is copied into each new one. An empty prompt means the model's own default, the one its
chat template writes (shown in the hint, read from the model's template). Editing an open conversation's prompt
applies from its next message.

Every hint sits directly under the field it explains.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.local_server import HOST, base_url
from desktop.settings import Sampling, Settings, presets
from desktop.settings_fields import (
    FIELD_WIDTH,
    SAME,
    BudgetPicker,
    heading,
    hint,
    keep_combo,
    model_shape,
    same_inset,
    template_system_prompt,
    with_hint,
)

UNCHANGED = object()


class SettingsDialog(QDialog):
    """Edits settings; nothing is applied until Save."""

    PAGES = ("Chat", "Model", "Sampling", "Tools", "Memory & storage", "Appearance", "Local server")

    def __init__(
        self,
        settings: Settings,
        *,
        default_models_dir: Path,
        model_dir: str | None = None,
        conversation_prompt: str | object | None = UNCHANGED,
        conversation_sampling: dict | object = UNCHANGED,
        conversation_title: str = "",
        budget: Any = None,
        model: tuple[Any, str] | None = None,
        tools: Any = None,
        list_tools: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        """``model``: the Model page's (``olmo3.fit.ModelShape``, display name); default: read from ``model_dir``.
        ``tools``: the app's :class:`desktop.tools.AppTools` (the Tools page lists its servers)."""
        super().__init__(parent)
        self.setObjectName("settingsDialog")
        self.setWindowTitle("Settings")
        self.resize(780, 540)
        self._settings = settings
        self._default_models_dir = default_models_dir
        self._model_dir = model_dir or settings.last_model or None
        self._presets = presets(self._model_dir)
        self._has_conversation = conversation_prompt is not UNCHANGED
        if budget is None:
            from olmo3.memory import memory_budget

            budget = memory_budget()
        self._budget = budget
        self._model_prompt = template_system_prompt(self._model_dir)
        self._model = model if model is not None else model_shape(self._model_dir)
        self._conv_sampling = dict(conversation_sampling) if isinstance(conversation_sampling, dict) else {}

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        body = QHBoxLayout()
        body.setContentsMargins(16, 16, 20, 8)
        body.setSpacing(20)
        self.nav = QListWidget(self)
        self.nav.setObjectName("settingsList")
        self.nav.addItems(list(self.PAGES))
        self.nav.setFixedWidth(170)
        self.pages = QStackedWidget(self)
        body.addWidget(self.nav)
        body.addWidget(self.pages, 1)
        outer.addLayout(body, 1)

        self.pages.addWidget(self._chat_page(conversation_prompt, conversation_title))
        self.pages.addWidget(self._model_page())
        self.pages.addWidget(self._sampling_page())
        from desktop.tools_settings import ToolsPage

        self.tools_page = ToolsPage(settings, tools, self, list_now=list_tools)
        self.pages.addWidget(self.tools_page)
        self.pages.addWidget(self._memory_page())
        self.pages.addWidget(self._appearance_page())
        self.pages.addWidget(self._server_page())
        self.nav.currentRowChanged.connect(self.pages.setCurrentIndex)
        self.nav.setCurrentRow(0)

        buttons = QHBoxLayout()
        buttons.setContentsMargins(20, 8, 20, 16)
        buttons.setSpacing(10)
        buttons.addStretch(1)
        self.cancel_button = QPushButton("Cancel", self)
        self.save_button = QPushButton("Save", self)
        self.save_button.setObjectName("primaryButton")
        self.save_button.setDefault(True)
        for button in (self.cancel_button, self.save_button):
            button.setMinimumWidth(84)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.save_button)
        outer.addLayout(buttons)
        self.cancel_button.clicked.connect(self.reject)
        self.save_button.clicked.connect(self.accept)

    def show_page(self, name: str) -> None:
        self.nav.setCurrentRow(self.PAGES.index(name))

    # pages -----------------------------------------------------------------------------------------------------
    def _page(self) -> tuple[QWidget, QVBoxLayout]:
        page = QWidget(self)
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        return page, layout

    def _chat_page(self, conversation_prompt: str | object | None, title: str) -> QWidget:
        page, layout = self._page()
        own = f"“{self._model_prompt}”" if self._model_prompt else "the one its chat template writes"
        layout.addWidget(heading("System prompt for new conversations", page))
        self.system_prompt = QPlainTextEdit(page)
        self.system_prompt.setObjectName("formText")
        self.system_prompt.setPlaceholderText("Empty: the model's own system prompt")
        self.system_prompt.setPlainText(self._settings.system_prompt)
        self.system_prompt.setFixedHeight(88)
        layout.addWidget(self.system_prompt)
        self.system_prompt_hint = hint("", page)
        layout.addWidget(self.system_prompt_hint)
        self.system_prompt.textChanged.connect(lambda: self._update_prompt_hint(own))
        self._update_prompt_hint(own)
        self.conv_prompt = QPlainTextEdit(page)
        self.conv_prompt.setObjectName("formText")
        self.conv_prompt.setFixedHeight(88)
        self.conv_prompt.setPlaceholderText("Empty: the model's own system prompt")
        if self._has_conversation:
            layout.addSpacing(16)
            suffix = f" · {title}" if title else ""
            layout.addWidget(heading(f"This conversation’s system prompt{suffix}", page))
            self.conv_prompt.setPlainText(conversation_prompt if isinstance(conversation_prompt, str) else "")
            layout.addWidget(self.conv_prompt)
            layout.addWidget(
                hint(
                    "Each conversation keeps the prompt it started with. A change here applies from its next "
                    "message; earlier replies stay as they are. Empty: the model's own system prompt.",
                    page,
                )
            )
            chosen = self._conv_sampling
            self.conv_budget = BudgetPicker(chosen.get("thinking_budget", SAME), allow_same=True, parent=page)
            self.conv_keep = keep_combo(chosen.get("keep_reasoning", SAME), allow_same=True, parent=page)
            form = QFormLayout()
            form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
            form.setHorizontalSpacing(14)
            form.addRow("Thinking budget", self.conv_budget)
            form.addRow("Earlier reasoning", self.conv_keep)
            layout.addSpacing(12)
            layout.addWidget(heading("This conversation’s reasoning (Think models)", page))
            layout.addLayout(form)
            layout.addWidget(
                hint(
                    "When the reasoning reaches the budget it is closed and the answer follows. Dropping earlier "
                    "replies' reasoning from the context leaves room for longer conversations.",
                    page,
                )
            )
        else:
            self.conv_prompt.hide()
        layout.addStretch(1)
        return page

    def _update_prompt_hint(self, own: str) -> None:
        if self.system_prompt.toPlainText().strip():
            text = "New conversations start with this prompt instead of the model's own."
        else:
            text = f"Empty, so new conversations use the model's own system prompt: {own}."
        self.system_prompt_hint.setText(text)

    def _model_page(self) -> QWidget:
        page, layout = self._page()
        layout.addWidget(heading("At start-up", page))
        self.auto_load = QCheckBox("Load the last used model when Olmo Desktop starts", page)
        self.auto_load.setChecked(self._settings.auto_load_last_model)
        layout.addWidget(self.auto_load)
        layout.addSpacing(16)
        shape, name = self._model
        self._shape = shape
        self.context = QSpinBox(page)
        self.context.setObjectName("contextField")
        self.context.setGroupSeparatorShown(True)
        self.context.setSuffix(" tokens")
        self.context.setFixedWidth(FIELD_WIDTH)
        same_inset(self.context)
        self.context_default = QPushButton("Use the default", page)
        self.context_default.setObjectName("secondaryButton")
        self.context_hint = hint("", page)
        self.context_fit = hint("", page)
        if shape is None:
            layout.addWidget(heading("Context length", page))
            layout.addWidget(hint("Load a model to choose how long its conversations may grow.", page))
            self.context.hide()
            self.context_default.hide()
            self._default_context = 0
        else:
            from olmo3.fit import default_context

            self._default_context = default_context(shape, self._budget)
            layout.addWidget(heading(f"Context length · {name}", page))
            row = QHBoxLayout()
            row.setSpacing(10)
            self.context.setRange(min(256, shape.max_context), shape.max_context)
            self.context.setSingleStep(1024)
            self.context.setValue(self._settings.model_context.get(str(self._model_dir), self._default_context))
            row.addWidget(self.context)
            row.addWidget(self.context_default)
            row.addStretch(1)
            layout.addLayout(row)
            layout.addWidget(self.context_fit)
            layout.addWidget(self.context_hint)
            self.context.valueChanged.connect(self._update_context_hint)
            self.context_default.clicked.connect(lambda: self.context.setValue(self._default_context))
            self._update_context_hint()
        layout.addStretch(1)
        return page

    def _update_context_hint(self, *_args: object) -> None:
        shape = self._shape
        if shape is None:
            return
        value = self.context.value()
        fit = shape.fit(value, self._budget)
        default = (
            f"The default, {self._default_context:,} tokens, is the model's maximum."
            if self._default_context == shape.max_context
            else f"The default, {self._default_context:,} tokens, is what fits; the model allows {shape.max_context:,}."
        )
        self.context_hint.setText(f"How long a conversation may grow before the oldest turns are left out. {default}")
        self.context_fit.setText(fit.message)
        self.context_fit.setProperty("kind", fit.verdict)
        self.context_fit.style().unpolish(self.context_fit)
        self.context_fit.style().polish(self.context_fit)
        self.context_default.setEnabled(value != self._default_context)

    def _sampling_page(self) -> QWidget:
        page, layout = self._page()
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        form.setFormAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(10)
        self.preset = QComboBox(page)
        self.preset.addItems([*self._presets.keys(), "Custom"])
        self.preset.setMinimumWidth(FIELD_WIDTH)
        form.addRow(
            "Preset",
            with_hint(
                self.preset,
                hint(
                    "Olmo 3 Think: temperature 0.6, top P 0.95, top K 50. Olmo 3 Instruct: the model's "
                    "generation config. Precise: greedy decoding (temperature 0).",
                    page,
                ),
                page,
            ),
        )
        self.follow_model = QCheckBox("Switch to the Think or Instruct preset when a model loads", page)
        self.follow_model.setChecked(self._settings.sampling_follows_model)
        form.addRow("", self.follow_model)
        s = self._settings.sampling
        self.temperature = self._double(0.0, 2.0, 0.05, s.temperature)
        self.top_p = self._double(0.01, 1.0, 0.01, s.top_p)
        self.top_k = self._int(0, 1000, s.top_k)
        self.min_p = self._double(0.0, 0.99, 0.01, s.min_p)
        self.repetition = self._double(0.5, 2.0, 0.01, s.repetition_penalty)
        self.max_tokens = self._int(1, 131072, s.max_tokens)
        self.seed = QLineEdit("" if s.seed is None else str(s.seed), page)
        self.seed.setPlaceholderText("random")
        self.seed.setFixedWidth(FIELD_WIDTH)
        self.budget = BudgetPicker(s.thinking_budget, parent=page)
        self.keep_reasoning = keep_combo(s.keep_reasoning, allow_same=False, parent=page)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top P", self.top_p)
        form.addRow("Top K", with_hint(self.top_k, hint("0 turns it off.", page), page))
        form.addRow("Min P", self.min_p)
        form.addRow("Repetition penalty", self.repetition)
        form.addRow(
            "Max tokens per reply",
            with_hint(
                self.max_tokens, hint("A cap: a reply also stops when the conversation fills the context.", page), page
            ),
        )
        self.seed_error = hint("Empty: a new random seed for every reply.", page)
        form.addRow("Seed", with_hint(self.seed, self.seed_error, page))
        form.addRow(
            "Thinking budget",
            with_hint(
                self.budget,
                hint(
                    "Think models: the reasoning is closed at this many tokens; max tokens then limits the answer.",
                    page,
                ),
                page,
            ),
        )
        form.addRow("Earlier reasoning", self.keep_reasoning)
        layout.addLayout(form)
        layout.addStretch(1)
        self._select_matching_preset()
        self.preset.currentTextChanged.connect(self._apply_preset)
        for spin in (self.temperature, self.top_p, self.min_p, self.repetition, self.top_k, self.max_tokens):
            spin.valueChanged.connect(self._select_matching_preset)
        return page

    def _memory_page(self) -> QWidget:
        page, layout = self._page()
        layout.addWidget(heading("Conversation memory", page))
        self.memory_budget = self._double(0.25, 512.0, 0.25, self._settings.memory_budget_gb)
        self.memory_budget.setSuffix(" GB")
        layout.addWidget(self.memory_budget)
        layout.addWidget(
            hint(
                "How much memory recent conversations may keep so follow-ups start instantly. "
                "Older ones are saved to disk and come back when you continue them.",
                page,
            )
        )
        self.kv_8bit = QCheckBox("Keep conversations' memory (KV cache) in 8 bits", page)
        self.kv_8bit.setChecked(self._settings.kv_8bit)
        layout.addSpacing(8)
        layout.addWidget(self.kv_8bit)
        layout.addWidget(
            hint(
                "About halves the memory that grows with a conversation (the full-attention layers), so more "
                "conversations stay warm. Replies can differ very slightly. From each conversation's next message.",
                page,
            )
        )
        layout.addSpacing(16)
        layout.addWidget(heading("Models folder", page))
        row = QHBoxLayout()
        row.setSpacing(10)
        self.models_dir = QLineEdit(self._settings.models_dir, page)
        self.models_dir.setPlaceholderText(str(self._default_models_dir))
        choose = QPushButton("Choose…", page)
        choose.clicked.connect(self._choose_models_dir)
        row.addWidget(self.models_dir, 1)
        row.addWidget(choose)
        layout.addLayout(row)
        layout.addWidget(hint("Where downloaded models are kept. Models already downloaded stay where they are.", page))
        layout.addStretch(1)
        return page

    def _appearance_page(self) -> QWidget:
        page, layout = self._page()
        layout.addWidget(heading("Theme", page))
        self.theme_group = QButtonGroup(page)
        for value, text in (("system", "Match the system"), ("light", "Light"), ("dark", "Dark")):
            button = QRadioButton(text, page)
            button.setProperty("value", value)
            button.setChecked(self._settings.theme == value)
            self.theme_group.addButton(button)
            layout.addWidget(button)
        layout.addStretch(1)
        return page

    def _server_page(self) -> QWidget:
        page, layout = self._page()
        self.server_enabled = QCheckBox("Serve the loaded model to other programs (OpenAI-compatible API)", page)
        self.server_enabled.setChecked(self._settings.server_enabled)
        layout.addWidget(self.server_enabled)
        layout.addWidget(
            hint(
                f"Editors, agents and scripts on this computer can use the model like OpenAI's API (it listens on "
                f"{HOST} only). They share the loaded model, its memory and its conversation caches with this "
                "window.",
                page,
            )
        )
        layout.addSpacing(16)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(10)
        self.server_port = self._int(1024, 65535, self._settings.server_port or 8000)
        self.server_key = QLineEdit(self._settings.server_api_key, page)
        self.server_key.setPlaceholderText("none")
        self.server_key.setFixedWidth(FIELD_WIDTH * 2)
        form.addRow("Port", self.server_port)
        key_hint = hint("Optional. Clients then send “Authorization: Bearer KEY”.", page)
        form.addRow("API key", with_hint(self.server_key, key_hint, page))
        layout.addLayout(form)
        layout.addSpacing(16)
        layout.addWidget(heading("Base URL", page))
        row = QHBoxLayout()
        row.setSpacing(10)
        self.server_url = QLabel("", page)
        self.server_url.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_url_button = QPushButton("Copy base URL", page)
        self.copy_url_button.clicked.connect(self.copy_base_url)
        row.addWidget(self.server_url, 1)
        row.addWidget(self.copy_url_button)
        layout.addLayout(row)
        layout.addStretch(1)
        self.server_port.valueChanged.connect(self._show_base_url)
        self._show_base_url()
        return page

    def _show_base_url(self, *_args: object) -> None:
        self.server_url.setText(base_url(self.server_port.value()))

    def copy_base_url(self) -> None:
        QApplication.clipboard().setText(base_url(self.server_port.value()))

    # helpers ---------------------------------------------------------------------------------------------------
    def _double(self, lo: float, hi: float, step: float, value: float) -> QDoubleSpinBox:
        box = QDoubleSpinBox(self)
        box.setRange(lo, hi)
        box.setSingleStep(step)
        box.setDecimals(2)
        box.setValue(value)
        box.setFixedWidth(FIELD_WIDTH)
        same_inset(box)
        return box

    def _int(self, lo: int, hi: int, value: int) -> QSpinBox:
        box = QSpinBox(self)
        box.setRange(lo, hi)
        box.setValue(value)
        box.setFixedWidth(FIELD_WIDTH)
        same_inset(box)
        return box

    def _current_sampling(self) -> Sampling:
        seed_text = self.seed.text().strip()
        seed = int(seed_text) if seed_text.lstrip("-").isdigit() else None
        return Sampling(
            temperature=round(self.temperature.value(), 2),
            top_p=round(self.top_p.value(), 2),
            top_k=self.top_k.value(),
            min_p=round(self.min_p.value(), 2),
            repetition_penalty=round(self.repetition.value(), 2),
            max_tokens=self.max_tokens.value(),
            seed=seed,
            thinking_budget=self._budget_value(),
            keep_reasoning=self.keep_reasoning.currentData(),
        )

    def _budget_value(self) -> int | None:
        value = self.budget.value()
        return value if isinstance(value, int) else None

    def _apply_preset(self, name: str) -> None:
        preset = self._presets.get(name)
        if preset is None:
            return
        for widget in (self.temperature, self.top_p, self.min_p, self.repetition, self.top_k, self.max_tokens):
            widget.blockSignals(True)
        self.temperature.setValue(preset.temperature)
        self.top_p.setValue(preset.top_p)
        self.top_k.setValue(preset.top_k)
        self.min_p.setValue(preset.min_p)
        self.repetition.setValue(preset.repetition_penalty)
        self.max_tokens.setValue(preset.max_tokens)
        for widget in (self.temperature, self.top_p, self.min_p, self.repetition, self.top_k, self.max_tokens):
            widget.blockSignals(False)

    def _select_matching_preset(self, *_args: object) -> None:
        # Presets set the sampler; the seed, thinking budget and earlier-reasoning choice stay the user's.
        def sampler(s: Sampling) -> Sampling:
            return replace(s, seed=None, thinking_budget=None, keep_reasoning=None)

        current = sampler(self._current_sampling())
        name = next((n for n, p in self._presets.items() if sampler(p) == current), "Custom")
        self.preset.blockSignals(True)
        self.preset.setCurrentText(name)
        self.preset.blockSignals(False)

    def _choose_models_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Models folder", self.models_dir.text() or str(self._default_models_dir)
        )
        if folder:
            self.models_dir.setText(folder)

    def accept(self) -> None:
        seed_text = self.seed.text().strip()
        if seed_text and not seed_text.lstrip("-").isdigit():
            self.show_page("Sampling")
            self.seed_error.setProperty("kind", "wont_fit")
            self.seed_error.setText(f"Seed must be a whole number or empty, not “{seed_text}”.")
            self.seed.setFocus()
            return
        super().accept()

    # results ---------------------------------------------------------------------------------------------------
    def result_settings(self) -> Settings:
        checked = self.theme_group.checkedButton()
        theme = str(checked.property("value")) if checked is not None else self._settings.theme
        contexts = dict(self._settings.model_context)
        if self._shape is not None and self._model_dir:
            if self.context.value() == self._default_context:
                contexts.pop(str(self._model_dir), None)  # the default follows the machine (and a new budget)
            else:
                contexts[str(self._model_dir)] = self.context.value()
        return replace(
            self._settings,
            system_prompt=self.system_prompt.toPlainText().strip(),
            sampling=self._current_sampling(),
            sampling_follows_model=self.follow_model.isChecked(),
            memory_budget_gb=round(self.memory_budget.value(), 2),
            kv_8bit=self.kv_8bit.isChecked(),
            models_dir=self.models_dir.text().strip(),
            theme=theme,
            auto_load_last_model=self.auto_load.isChecked(),
            model_context=contexts,
            **self.tools_page.values(),
            server_enabled=self.server_enabled.isChecked(),
            server_port=self.server_port.value(),
            server_api_key=self.server_key.text().strip(),
        )

    def conversation_prompt(self) -> str | object | None:
        """The open conversation's system prompt: a string, None (the model's default), or UNCHANGED."""
        if not self._has_conversation:
            return UNCHANGED
        return self.conv_prompt.toPlainText().strip() or None

    def conversation_sampling(self) -> dict | object:
        """The open conversation's own settings (only those not following the Sampling page), or UNCHANGED."""
        if not self._has_conversation:
            return UNCHANGED
        own = {k: v for k, v in self._conv_sampling.items() if k not in ("thinking_budget", "keep_reasoning")}
        budget, keep = self.conv_budget.value(), self.conv_keep.currentData()
        if budget is not SAME:
            own["thinking_budget"] = budget
        if keep is not SAME:
            own["keep_reasoning"] = keep
        return own


def _esc(text: str) -> str:
    import html

    return html.escape(text)
