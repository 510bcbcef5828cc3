"""Screenshots of tools (``olmo-desktop --screenshot DIR`` calls :func:`tool_screenshots`): a conversation with tool
cards (done, a long result shortened, a declined call), a call waiting for consent with the question open, a call
running, and Settings → Tools with a running, a failed and an HTTP server.

Synthetic like the rest of the screenshots: rows in a real conversation store, and the engine's events as the
controller would get them; no MCP server is started.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QApplication

QUESTION = "What's in my notes folder, and what is 17.5% of 2,340?"
LISTING = "meeting-2025-01-14.md\nrecipes/\nreading-list.md\ntrip-lisbon.md"
READING = "\n".join(
    f"{i}. {title}"
    for i, title in enumerate(
        [
            "The Mythical Man-Month — Frederick P. Brooks",
            "Designing Data-Intensive Applications — Martin Kleppmann",
            "The Pragmatic Programmer — Hunt & Thomas",
            "A Philosophy of Software Design — John Ousterhout",
            "Structure and Interpretation of Computer Programs — Abelson & Sussman",
            "Thinking, Fast and Slow — Daniel Kahneman",
            "Gödel, Escher, Bach — Douglas Hofstadter",
            "The Art of Doing Science and Engineering — Richard Hamming",
            "Working in Public — Nadia Eghbal",
            "Peopleware — DeMarco & Lister",
            "The Design of Everyday Things — Don Norman",
            "Seeing Like a State — James C. Scott",
        ],
        1,
    )
)
ANSWER = (
    "Your **Notes** folder has three notes and a `recipes/` folder:\n\n"
    "- `meeting-2025-01-14.md`\n- `reading-list.md` (twelve books, starting with *The Mythical Man-Month*)\n"
    "- `trip-lisbon.md`\n\nAnd **17.5% of 2,340 is 409.5**. I didn't save anything, since you declined the write."
)


def _calls(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    parsed = [{"name": n, "arguments": a} for n, a in calls]
    raw = "\n".join(f"{n}(" + ", ".join(f"{k}={json.dumps(v)}" for k, v in a.items()) + ")" for n, a in calls)
    return {"calls": parsed, "raw_calls": raw}


def _result(name: str, server: str, arguments: dict[str, Any], seconds: float, **flags: Any) -> dict[str, Any]:
    return {
        "name": name,
        "server": server,
        "arguments": arguments,
        "is_error": False,
        "cancelled": False,
        "timed_out": False,
        "cut_chars": 0,
        "declined": False,
        "elapsed_s": seconds,
        **flags,
    }


def seed_tool_conversation(store: Any) -> str:
    """A finished turn with calls: a listing and a sum, a long file (shortened), a declined write, the answer."""
    conv = store.create_conversation()
    user = store.append_message(conv, None, "user", QUESTION)
    first_calls = (("list_directory", {"path": "~/Notes"}), ("multiply", {"a": 2340, "b": 0.175}))
    first = store.append_message(
        conv, user, "assistant", "I'll look at the folder and work out the sum.", tool=_calls(*first_calls)
    )
    listing = store.append_message(
        conv, first, "environment", LISTING, tool=_result("list_directory", "files", {"path": "~/Notes"}, 0.12)
    )
    product = store.append_message(
        conv, listing, "environment", "409.5", tool=_result("multiply", "calculator", {"a": 2340, "b": 0.175}, 0.03)
    )
    second_calls = (
        ("read_file", {"path": "~/Notes/reading-list.md"}),
        ("write_file", {"path": "~/Notes/summary.md", "content": "Reading list: 12 books…"}),
    )
    second = store.append_message(conv, product, "assistant", "", tool=_calls(*second_calls))
    long_text = READING + "\n\n[Cut: 18,432 more characters not shown; the tool returned 34,432 characters.]"
    read = store.append_message(
        conv,
        second,
        "environment",
        long_text,
        tool=_result("read_file", "files", second_calls[0][1], 0.08, cut_chars=18_432),
    )
    declined = store.append_message(
        conv,
        read,
        "environment",
        "Error: the user declined this call; do not call it again unless asked.",
        tool=_result("write_file", "files", second_calls[1][1], 0.0, is_error=True, declined=True),
    )
    stats = {
        "prompt_tokens": 212,
        "cached_tokens": 1_406,
        "generated_tokens": 96,
        "ttft_s": 0.09,
        "tokens_per_s": 41.2,
        "finish_reason": "stop",
        "reconcile": "append",
    }
    store.append_message(conv, declined, "assistant", ANSWER, stats=stats)
    return conv


def _request(name: str, server: str, arguments: dict[str, Any], description: str) -> Any:
    from olmo3.chat.events import ToolCallRequested

    return ToolCallRequested(
        request_id=1,
        call_id=f"shot-{name}",
        round=1,
        index=0,
        name=name,
        server=server,
        arguments=arguments,
        description=description,
    )


def _listing() -> Any:
    from desktop.tools import Listing
    from olmo3.tools.info import ToolInfo
    from olmo3.tools.toolhub import ServerStatus

    def tool(name: str, server: str, description: str, props: dict[str, Any], **kw: Any) -> ToolInfo:
        schema = {"type": "object", "properties": props, "required": list(props)}
        return ToolInfo(name=name, server=server, tool=name, description=description, input_schema=schema, **kw)

    path = {"path": {"type": "string", "description": "A path inside the allowed folders"}}
    tools = [
        tool("read_file", "files", "Read the complete contents of a file.", path, always_allow=True),
        tool(
            "write_file",
            "files",
            "Create a new file or overwrite an existing one.",
            {**path, "content": {"type": "string"}},
        ),
        tool("list_directory", "files", "List the files and folders in a directory.", path, always_allow=True),
        tool(
            "search_files",
            "files",
            "Search for files whose names match a pattern.",
            {**path, "pattern": {"type": "string"}},
            enabled=False,
        ),
        tool("forecast", "weather", "Get the weather forecast for a place.", {"place": {"type": "string"}}),
    ]
    stderr = (
        "MCP server 'github' could not start: it closed the connection (the process exited or the server hung up)\n"
        "Its last output (stderr):\nError: GITHUB_PERSONAL_ACCESS_TOKEN environment variable is not set"
    )
    servers = [
        ServerStatus("files", "stdio", "running", None, 4),
        ServerStatus("weather", "http", "running", None, 1),
        ServerStatus("github", "stdio", "failed", stderr, 0),
    ]
    return Listing(tools=tools, servers=servers)


CONFIG = {
    "mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "~/Notes"]},
        "weather": {"url": "https://weather.example.com/mcp"},
        "github": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"]},
    }
}


def tool_screenshots(window: Any, paths: Any, out_dir: Path, theme: str, app: QApplication) -> list[Path]:
    """Save the tool screenshots (30-37) of one theme; the window is left at its wide size."""
    from desktop.screenshots import WIDE, _composite, _pose_loaded, _save, _settle

    def shot(widget: Any, path: Path, popup: Any = None) -> Path:
        return _composite(widget, popup, path, app) if popup is not None else _save(widget, path, app)

    window.resize(*WIDE)

    saved: list[Path] = []
    view = window.chat_view
    # 1. a finished conversation with tool cards
    conv = seed_tool_conversation(window.store)
    window.refresh_sidebar()
    window.controller.open(conv)
    _pose_loaded(window, "Olmo 3.1 32B Instruct · 4-bit", used=1_714, limit=65_536)
    view.finish_backfill()
    _settle(app)
    view.verticalScrollBar().setValue(0)
    saved.append(shot(window, out_dir / f"30-tool-cards-{theme}.png"))
    view.scroll_to_bottom()
    saved.append(shot(window, out_dir / f"31-tool-cards-bottom-{theme}.png"))
    size = window.size()
    window.resize(800, size.height())
    _settle(app)
    view.verticalScrollBar().setValue(0)
    saved.append(shot(window, out_dir / f"32-tool-cards-narrow-{theme}.png"))
    window.resize(size)
    _settle(app)

    # 2. a call waiting for consent, the question open; then a call running
    window.controller.new_chat()
    _pose_loaded(window, "Olmo 3.1 32B Instruct · 4-bit", used=1_388, limit=65_536)
    view.add_user_message("Save a summary of my reading list to ~/Notes/summary.md.", 0)
    reply = view.begin_assistant()
    view.append_delta("I'll write the summary now.", "answer")
    view.flush()
    view.end_stream()
    reply.set_actions_pinned(False)
    arguments = {"path": "~/Notes/summary.md", "content": "# Reading list\n\n12 books, starting with Brooks."}
    request = _request("write_file", "files", arguments, "Create a new file or overwrite an existing one.")
    tool = {"name": "write_file", "server": "files", "arguments": arguments}
    view.add_tool_card({"call_id": request.call_id, "tool": tool, "pending": "asking"})
    window.composer.set_state("generating", model_name="Olmo 3.1 32B Instruct")
    _settle(app)
    from desktop.tool_dialogs import ConsentDialog

    dialog = ConsentDialog(request, window)
    dialog.show()
    dialog.adjustSize()
    top_left = window.mapToGlobal(QPoint((window.width() - dialog.width()) // 2, 60))
    dialog.move(top_left)
    saved.append(shot(window, out_dir / f"33-tool-consent-{theme}.png", popup=dialog))
    saved.append(shot(dialog, out_dir / f"34-tool-consent-dialog-{theme}.png"))
    dialog.decided.disconnect()
    dialog.close()
    card = view.tool_card(request.call_id)
    card.set_pending("running")
    card._started -= 3.2  # "Running… 3 s"
    card._update_status()
    saved.append(shot(window, out_dir / f"35-tool-running-{theme}.png"))
    window.composer.set_state("ready", model_name="Olmo 3.1 32B Instruct")

    # 3. Settings → Tools
    from desktop.settings_dialog import SettingsDialog
    from desktop.tools import AppTools

    paths.mcp_config.write_text(json.dumps(CONFIG, indent=2) + "\n")
    tools = AppTools(paths)
    tools.state.set_tool_enabled("files", "search_files", False)
    for name in ("read_file", "list_directory"):
        tools.state.set_always_allow("files", name, True)
    settings = SettingsDialog(
        window.settings, default_models_dir=paths.models_dir, tools=tools, list_tools=False, parent=window
    )
    settings.resize(820, 640)
    settings.show_page("Tools")
    settings.tools_page.show_listing(_listing())
    settings.show()
    _settle(app)
    saved.append(shot(settings, out_dir / f"36-settings-tools-{theme}.png"))
    page = settings.tools_page
    page.server_rows[0].tool_rows[1].schema_button.setChecked(True)
    page.editor.setPlainText('{"mcpServers": {"files": {"command": "npx", "args": "-y server-filesystem"}}}')
    page.check()
    _settle(app)
    area = page.scroll_area
    area.verticalScrollBar().setValue(area.verticalScrollBar().maximum())
    saved.append(shot(settings, out_dir / f"37-settings-tools-editor-{theme}.png"))
    settings.close()
    tools.close()
    return saved
