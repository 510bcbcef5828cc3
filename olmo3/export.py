"""Conversation export (Markdown, JSON, HTML) and strict import validation.

All functions work on the *conversation dict* of the versioned JSON format (what
:meth:`olmo3.store.ConversationStore.export_dict` returns and :func:`from_json` yields)::

    {"format": "olmo-desktop.conversation", "version": 1,
     "id", "title", "title_is_auto", "model_id", "model_revision", "system_prompt",
     "sampling", "created_at", "updated_at", "pinned", "folder", "engine_state",
     "messages": [{"id", "parent_id", "role", "content", "reasoning", "token_ids",
                   "stats", "provenance", "state", "created_at", "active"}, ...]}

JSON is lossless (the whole branch tree, token ids, stats, provenance, the engine's state);
Markdown and HTML show the active branch, the one on screen. HTML is self-contained and safe to
open anywhere: every piece of text is escaped, Markdown is rendered with raw HTML disabled,
images are not loaded, code is highlighted with inline styles, and a Content-Security-Policy
forbids scripts and remote resources. The GUI prints it to PDF with Qt.

Qt-free; markdown-it-py and pygments are imported only by :func:`to_html`.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "FORMAT",
    "VERSION",
    "active_path",
    "from_json",
    "iso_to_ts",
    "parents_first",
    "to_html",
    "to_json",
    "to_markdown",
    "ts_to_iso",
    "validate_conversation",
]

FORMAT: Final = "olmo-desktop.conversation"
VERSION: Final = 1

_ROLES = ("system", "user", "assistant")
_STATES = ("streaming", "complete", "interrupted", "error")
_ROLE_LABELS = {"system": "System", "user": "You", "assistant": "Assistant"}


# --------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------


def ts_to_iso(ts: float) -> str:
    """Unix seconds → ``2025-01-31T12:00:00.123456Z`` (stable through :func:`iso_to_ts`)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def iso_to_ts(text: str) -> float:
    """ISO 8601 → Unix seconds; a time without a zone is taken as UTC."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

_CONV_FIELDS: Final = (
    "format",
    "version",
    "id",
    "title",
    "title_is_auto",
    "model_id",
    "model_revision",
    "system_prompt",
    "sampling",
    "created_at",
    "updated_at",
    "pinned",
    "folder",
    "engine_state",
    "messages",
)
_MSG_FIELDS: Final = (
    "id",
    "parent_id",
    "role",
    "content",
    "reasoning",
    "token_ids",
    "stats",
    "provenance",
    "state",
    "created_at",
    "active",
)


class _Checker:
    """Field checks that name where the problem is (``messages[3].token_ids: ...``)."""

    def __init__(self, obj: Mapping[str, Any], where: str, fields: Sequence[str]) -> None:
        self.obj = obj
        self.where = where
        missing = [f for f in fields if f not in obj]
        if missing:
            raise ValueError(f"{where}missing field {missing[0]!r}")
        unknown = sorted(k for k in obj if k not in fields)
        if unknown:
            raise ValueError(f"{where}unknown field {unknown[0]!r}")

    def fail(self, key: str, expected: str) -> None:
        value = self.obj[key]
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ValueError(f"{self.where}{key}: expected {expected}, got {shown}")

    def str_(self, key: str, *, optional: bool = False, nonempty: bool = False) -> str | None:
        value = self.obj[key]
        if value is None and optional:
            return None
        if not isinstance(value, str) or (nonempty and not value):
            expected = "a non-empty string" if nonempty else "a string"
            self.fail(key, expected + (" or null" if optional else ""))
        return value

    def bool_(self, key: str) -> bool:
        value = self.obj[key]
        if not isinstance(value, bool):
            self.fail(key, "true or false")
        return value

    def dict_(self, key: str, *, optional: bool = False) -> dict[str, Any] | None:
        value = self.obj[key]
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            self.fail(key, "an object" + (" or null" if optional else ""))
        return json.loads(json.dumps(value))  # deep copy; also proves it is plain JSON

    def choice(self, key: str, choices: Sequence[str]) -> str:
        value = self.obj[key]
        if value not in choices:
            self.fail(key, "one of " + ", ".join(repr(c) for c in choices))
        return value

    def time(self, key: str) -> str:
        value = self.obj[key]
        if not isinstance(value, str):
            self.fail(key, "an ISO 8601 date-time string")
        try:
            iso_to_ts(value)
        except (ValueError, OverflowError):
            self.fail(key, "an ISO 8601 date-time string")
        return value

    def token_ids(self, key: str) -> list[int] | None:
        value = self.obj[key]
        if value is None:
            return None
        if not isinstance(value, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value
        ):
            self.fail(key, "a list of non-negative integers or null")
        return list(value)


def validate_conversation(data: Any) -> dict[str, Any]:
    """Check a conversation dict strictly; return a clean deep copy or raise ``ValueError``.

    Checks the format tag and version, every field's presence and type, unique message ids,
    parent references (known, same file, no cycles) and one active message per sibling group.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a JSON object at the top level, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ValueError(f"not an Olmo Desktop conversation: 'format' is {data.get('format')!r}, expected {FORMAT!r}")
    version = data.get("version")
    if version != VERSION or isinstance(version, bool):
        raise ValueError(f"unsupported conversation format version {version!r} (this app reads {VERSION})")
    c = _Checker(data, "", _CONV_FIELDS)
    out: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "id": c.str_("id", nonempty=True),
        "title": c.str_("title"),
        "title_is_auto": c.bool_("title_is_auto"),
        "model_id": c.str_("model_id", optional=True),
        "model_revision": c.str_("model_revision", optional=True),
        "system_prompt": c.str_("system_prompt", optional=True),
        "sampling": c.dict_("sampling"),
        "created_at": c.time("created_at"),
        "updated_at": c.time("updated_at"),
        "pinned": c.bool_("pinned"),
        "folder": c.str_("folder", optional=True),
        "engine_state": c.dict_("engine_state", optional=True),
    }
    if not isinstance(data["messages"], list):
        c.fail("messages", "a list")
    messages = [_validate_message(m, i) for i, m in enumerate(data["messages"])]
    _check_tree(messages)
    out["messages"] = messages
    return out


def _validate_message(msg: Any, index: int) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(msg, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(msg).__name__}")
    c = _Checker(msg, where + ".", _MSG_FIELDS)
    return {
        "id": c.str_("id", nonempty=True),
        "parent_id": c.str_("parent_id", optional=True, nonempty=True),
        "role": c.choice("role", _ROLES),
        "content": c.str_("content"),
        "reasoning": c.str_("reasoning"),
        "token_ids": c.token_ids("token_ids"),
        "stats": c.dict_("stats", optional=True),
        "provenance": c.dict_("provenance", optional=True),
        "state": c.choice("state", _STATES),
        "created_at": c.time("created_at"),
        "active": c.bool_("active"),
    }


def _check_tree(messages: Sequence[Mapping[str, Any]]) -> None:
    index: dict[str, int] = {}
    for i, m in enumerate(messages):
        if m["id"] in index:
            raise ValueError(f"messages[{i}].id: duplicate id {m['id']!r} (also messages[{index[m['id']]}])")
        index[m["id"]] = i
    for i, m in enumerate(messages):
        parent = m["parent_id"]
        if parent is not None and parent not in index:
            raise ValueError(f"messages[{i}].parent_id: refers to unknown message {parent!r}")
    for i, m in enumerate(messages):  # walk up from each message: a cycle never reaches a root
        seen = {m["id"]}
        node = m
        while node["parent_id"] is not None:
            if node["parent_id"] in seen:
                raise ValueError(f"messages[{i}].parent_id: the parent chain loops back to {node['parent_id']!r}")
            seen.add(node["parent_id"])
            node = messages[index[node["parent_id"]]]
    groups: dict[str | None, list[int]] = {}
    for i, m in enumerate(messages):
        groups.setdefault(m["parent_id"], []).append(i)
    for parent, members in groups.items():
        active = [i for i in members if messages[i]["active"]]
        if len(active) != 1:
            where = "the root messages" if parent is None else f"the replies to {parent!r}"
            raise ValueError(
                f"messages: exactly one of {where} must be active, found {len(active)} "
                f"(messages {', '.join(f'[{i}]' for i in members)})"
            )


def parents_first(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Order messages so every parent precedes its children, otherwise keeping the given order.

    Sibling order is list order, so this keeps branches numbered as they were exported.
    """
    by_parent: dict[str | None, list[Mapping[str, Any]]] = {}
    for m in messages:
        by_parent.setdefault(m["parent_id"], []).append(m)
    placed: set[str] = set()
    out: list[Mapping[str, Any]] = []
    pending = list(messages)
    while pending:  # usually one pass: our own exports are already parents-first
        rest = []
        for m in pending:
            if m["parent_id"] is None or m["parent_id"] in placed:
                out.append(m)
                placed.add(m["id"])
            else:
                rest.append(m)
        if len(rest) == len(pending):
            raise ValueError("messages: parent references do not form a tree")
        pending = rest
    return out


def active_path(conv: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The shown branch: from the active root, following active children.

    Each returned message dict is a shallow copy with ``branch`` = (index, count) among its
    siblings added, for "branch 2 of 3" notes.
    """
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for m in conv["messages"]:
        children.setdefault(m["parent_id"], []).append(m)
    path: list[dict[str, Any]] = []
    parent: str | None = None
    seen: set[str] = set()
    while True:
        group = children.get(parent, [])
        current = next((m for m in group if m["active"]), None)
        if current is None or current["id"] in seen:
            return path
        seen.add(current["id"])
        path.append({**current, "branch": (group.index(current), len(group))})
        parent = current["id"]


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def to_json(conv: Mapping[str, Any]) -> str:
    """Lossless, versioned JSON (UTF-8 text, stable key order, trailing newline)."""
    return json.dumps(conv, ensure_ascii=False, indent=2, allow_nan=False) + "\n"


def from_json(text: str | bytes) -> dict[str, Any]:
    """Parse and strictly validate an exported conversation; ``ValueError`` says what is wrong."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not a UTF-8 text file ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    return validate_conversation(data)


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _date(ts_iso: str) -> str:
    return datetime.fromisoformat(ts_iso).strftime("%Y-%m-%d %H:%M UTC")


def _model_line(conv: Mapping[str, Any]) -> str:
    model = conv.get("model_id") or "unknown model"
    revision = conv.get("model_revision")
    return model + (f" @ {revision[:12]}" if revision else "")


def _state_note(msg: Mapping[str, Any]) -> str | None:
    if msg["state"] == "interrupted":
        return "This reply was interrupted."
    if msg["state"] == "error":
        error = (msg.get("stats") or {}).get("error")
        return "This reply failed" + (f": {error}" if isinstance(error, str) and error else ".")
    if msg["state"] == "streaming":
        return "This reply was still being written."
    return None


def to_markdown(conv: Mapping[str, Any]) -> str:
    """The shown branch as Markdown; reasoning goes in a collapsible ``<details>`` block."""
    lines = [f"# {conv['title']}", ""]
    lines += [f"*{_model_line(conv)} · {_date(conv['created_at'])}*", ""]
    if conv.get("system_prompt"):
        lines += ["**System prompt:**", ""]
        lines += [("> " + line).rstrip() for line in conv["system_prompt"].splitlines()] + [""]
    for msg in active_path(conv):
        index, count = msg["branch"]
        heading = f"## {_ROLE_LABELS[msg['role']]}"
        if count > 1:
            heading += f" (branch {index + 1} of {count})"
        lines += [heading, ""]
        if msg["reasoning"]:
            # A literal </details> in the reasoning would close the block early.
            reasoning = msg["reasoning"].replace("</details>", "&lt;/details>")
            lines += ["<details>", "<summary>Reasoning</summary>", ""]
            lines += [reasoning.strip("\n"), "", "</details>", ""]
        if msg["content"]:
            lines += [msg["content"].strip("\n"), ""]
        note = _state_note(msg)
        if note:
            lines += [f"*{note}*", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'"

_CSS = """
body { font-family: -apple-system, "Helvetica Neue", Helvetica, Arial, sans-serif; font-size: 14px;
       line-height: 1.5; color: #1d1d1f; background: #ffffff; margin: 0; }
main { max-width: 760px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; overflow-wrap: anywhere; }
.meta { color: #6e6e73; font-size: 12px; margin: 0 0 24px; }
.message { margin: 0 0 20px; }
.role { font-weight: 600; font-size: 12px; color: #6e6e73; margin-bottom: 4px; }
.branch { font-weight: normal; }
.user .body { background: #e8f4f2; border-radius: 8px; padding: 8px 12px; }
.system-prompt { border-left: 3px solid #d2d2d7; padding: 4px 12px; color: #424245; margin: 0 0 20px; }
.plain { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
.reasoning { border-left: 3px solid #d2d2d7; padding: 0 12px; color: #6e6e73; margin: 0 0 8px; }
.reasoning summary { cursor: pointer; font-size: 12px; }
.notice { color: #b3261e; font-size: 12px; font-style: italic; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; word-wrap: break-word; border-radius: 8px;
      padding: 10px 12px; font-size: 12.5px; background: #f6f8fa; }
code { font-family: "SF Mono", Menlo, "DejaVu Sans Mono", Consolas, monospace; }
:not(pre) > code { background: #f2f2f4; border-radius: 4px; padding: 0 3px; overflow-wrap: anywhere; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d2d2d7; padding: 4px 8px; }
blockquote { border-left: 3px solid #d2d2d7; margin: 0; padding-left: 12px; color: #424245; }
p, li { overflow-wrap: anywhere; }
"""

_PYGMENTS_STYLE = "default"


def _highlight(code: str, lang: str, _attrs: str) -> str:
    """Highlight a fenced block with inline styles (they survive Qt's HTML subset and printing)."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name
    from pygments.lexers.special import TextLexer
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name(lang) if lang else TextLexer()
    except ClassNotFound:
        lexer = TextLexer()
    formatter = HtmlFormatter(nowrap=True, noclasses=True, style=_PYGMENTS_STYLE)
    body = highlight(code, lexer, formatter)  # pygments escapes <, >, & and quotes
    if body.endswith("\n"):  # the fence's final newline would show as an empty last line
        body = body[:-1]
    label = f' data-lang="{html.escape(lang)}"' if lang else ""
    return f'<pre class="code"{label}><code>{body}</code></pre>'


def _markdown_renderer() -> Any:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "highlight": _highlight, "typographer": False})
    md.enable(["table", "strikethrough"])

    def image(_renderer: Any, tokens: Any, idx: int, _options: Any, _env: Any) -> str:
        # Never load anything: show an image as its alt text (the URL in a tooltip).
        token = tokens[idx]
        alt = "".join(t.content for t in token.children or [])
        src = token.attrGet("src") or ""
        return f'<span class="image" title="{html.escape(str(src))}">[image: {html.escape(alt)}]</span>'

    md.add_render_rule("image", image)
    return md


def _plain(text: str) -> str:
    return f'<p class="plain">{html.escape(text)}</p>'


def to_html(conv: Mapping[str, Any]) -> str:
    """A self-contained HTML page of the shown branch (no scripts, no external resources)."""
    md = _markdown_renderer()
    title = html.escape(conv["title"])
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="Olmo Desktop">',
        f"<title>{title}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>{title}</h1>",
        f'<p class="meta">{html.escape(_model_line(conv))} · {html.escape(_date(conv["created_at"]))}</p>',
    ]
    if conv.get("system_prompt"):
        out.append(
            f'<div class="system-prompt"><div class="role">System prompt</div>{_plain(conv["system_prompt"])}</div>'
        )
    for msg in active_path(conv):
        index, count = msg["branch"]
        branch = f' <span class="branch">· branch {index + 1} of {count}</span>' if count > 1 else ""
        out.append(f'<section class="message {msg["role"]}">')
        out.append(f'<div class="role">{_ROLE_LABELS[msg["role"]]}{branch}</div>')
        out.append('<div class="body">')
        if msg["reasoning"]:
            out.append('<details class="reasoning"><summary>Reasoning</summary>')
            out.append(md.render(msg["reasoning"]))
            out.append("</details>")
        if msg["content"]:
            # Model replies are Markdown; what people type is shown exactly as typed.
            out.append(md.render(msg["content"]) if msg["role"] == "assistant" else _plain(msg["content"]))
        note = _state_note(msg)
        if note:
            out.append(f'<p class="notice">{html.escape(note)}</p>')
        out.append("</div>")
        out.append("</section>")
    out += ["</main>", "</body>", "</html>", ""]
    return "\n".join(out)
