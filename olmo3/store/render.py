"""Markdown and HTML views of an exported conversation: the shown branch, for people to read.

HTML is self-contained and safe to open anywhere: every piece of text is escaped, Markdown is rendered with raw
HTML disabled, images are not loaded, code is highlighted with inline styles, and a Content-Security-Policy forbids
scripts and remote resources. The GUI prints it to PDF with Qt.

These work on the conversation dict of :mod:`olmo3.store.interchange` (which re-exports them) and import nothing
from it. Qt-free; markdown-it-py and pygments are imported only by :func:`to_html`.

Attached documents are listed at the top (name, pages, tokens); under each user message, the documents its turn used
("whole" or "N passages") and the passages themselves, each labelled with its file and pages, in a collapsed block.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from olmo3.docs.prompt import TurnAttachment
from olmo3.docs.turn import from_provenance

from .mdsafe import neutralize

__all__ = ["active_path", "provenance_line", "to_html", "to_markdown", "tool_calls_text", "tool_result_heading"]

_ROLE_LABELS = {"system": "System", "user": "You", "assistant": "Assistant", "environment": "Tool"}


def tool_calls_text(msg: Mapping[str, Any]) -> list[str]:
    """An assistant message's function calls, one ``name(key=<json>, …)`` each (none for other messages)."""
    tool = msg.get("tool")
    calls = tool.get("calls") if isinstance(tool, Mapping) else None
    out: list[str] = []
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, Mapping):
            continue
        given = call.get("arguments")
        arguments: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
        args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())
        out.append(f"{call.get('name') or '?'}({args})")
    return out


def tool_result_heading(msg: Mapping[str, Any]) -> str:
    """ "Tool result · add (calculator)", with how it went when it did not simply work."""
    found = msg.get("tool")
    tool: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    name = " ".join(str(tool.get("name") or "a tool").split())
    server = f" ({' '.join(str(tool['server']).split())})" if tool.get("server") else ""
    status = ""
    if tool.get("declined"):
        status = " · declined"
    elif tool.get("cancelled"):
        status = " · stopped"
    elif tool.get("timed_out"):
        status = " · timed out"
    elif tool.get("is_error"):
        status = " · error"
    return f"Tool result · {name}{server}{status}"


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text`` (what is inside a fence is text everywhere)."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


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
# Markdown
# --------------------------------------------------------------------------------------------


def _date(ts_iso: str) -> str:
    dt = datetime.fromisoformat(ts_iso)
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%d %H:%M UTC")


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


def _attachment_line(a: Mapping[str, Any]) -> str:
    pages = len(a.get("pages") or ())
    return f"{a['name']} · {pages} page{'s' if pages != 1 else ''} · {int(a.get('tokens') or 0):,} tokens"


def _turn_documents(msg: Mapping[str, Any]) -> list[TurnAttachment]:
    return from_provenance(msg.get("provenance")) if msg["role"] == "user" else []


def _quote(text: str) -> list[str]:
    return [("> " + line).rstrip() for line in text.strip("\n").splitlines()] or [">"]


def _markdown_documents(used: list[TurnAttachment]) -> list[str]:
    # Names and passages come from documents: content, neutralized like messages (only <details> is ours).
    lines = [neutralize("*Documents: " + "; ".join(a.chip_label for a in used) + "*"), ""]
    passages = [(a, h) for a in used for h in a.passages]
    if passages:
        lines += ["<details>", f"<summary>Passages used ({len(passages)})</summary>", ""]
        for a, hit in passages:
            lines += [neutralize(f"**{a.name}, {hit.page_label}**"), "", neutralize("\n".join(_quote(hit.text))), ""]
        lines += ["</details>", ""]
    return lines


def provenance_line(msg: Mapping[str, Any]) -> str | None:
    """A reply's provenance in one line: "Olmo-3-7B-Think @ 0123456789ab · temperature 0.6 · top P 0.95 · top K 50 ·
    seed 1234 · thinking budget 4,096 (stopped at 4,096 tokens) · 8-bit KV" (None for replies without one).

    The JSON export carries the whole record; this is the summary for people."""
    prov = msg.get("provenance")
    if msg.get("role") != "assistant" or not isinstance(prov, Mapping):
        return None
    sampling = prov.get("sampling")
    if not isinstance(sampling, Mapping):
        return None
    model = prov.get("model_repo_id") or prov.get("model") or prov.get("model_name") or "unknown model"
    revision = prov.get("model_revision")
    parts = [str(model) + (f" @ {revision[:12]}" if isinstance(revision, str) and revision else "")]
    temperature = sampling.get("temperature")
    if temperature == 0:
        parts.append("greedy")
    else:
        for key, label in (("temperature", "temperature"), ("top_p", "top P"), ("top_k", "top K")):
            if isinstance(sampling.get(key), int | float):
                parts.append(f"{label} {sampling[key]:g}")
    if isinstance(prov.get("seed"), int):
        parts.append(f"seed {prov['seed']}" + (" (random)" if prov.get("seed_was_random") else ""))
    budget = prov.get("thinking_budget")
    if isinstance(budget, int):
        stats = msg.get("stats") if isinstance(msg.get("stats"), Mapping) else {}
        used = stats.get("reasoning_tokens") if stats else None
        stopped = f" (stopped at {used:,} tokens)" if stats and stats.get("reasoning_stopped") and used else ""
        parts.append(f"thinking budget {budget:,}{stopped}")
    if prov.get("keep_reasoning") is False:
        parts.append("earlier reasoning dropped")
    if isinstance(prov.get("kv_bits"), int):
        parts.append(f"{prov['kv_bits']}-bit KV")
    return " · ".join(parts)


def to_markdown(conv: Mapping[str, Any]) -> str:
    """The shown branch as Markdown; reasoning goes in a collapsible ``<details>`` block.

    Every piece of text goes through :func:`olmo3.store.mdsafe.neutralize`: raw HTML in a message shows as text
    and links outside the allow-list are inert in whatever renderer opens the file; only our own ``<details>``
    markup is HTML.
    """
    title = " ".join(str(conv["title"]).split()) or "Conversation"
    lines = [neutralize(f"# {title}"), ""]
    lines += [neutralize(f"*{_model_line(conv)} · {_date(conv['created_at'])}*"), ""]
    if conv.get("system_prompt"):
        lines += ["**System prompt:**", ""]
        quoted = "\n".join(("> " + line).rstrip() for line in conv["system_prompt"].splitlines())
        lines += [neutralize(quoted), ""]
    if conv.get("attachments"):
        lines += ["**Attached documents:**", ""]
        lines += [neutralize(f"- {_attachment_line(a)}") for a in conv["attachments"]] + [""]
    for msg in active_path(conv):
        index, count = msg["branch"]
        label = tool_result_heading(msg) if msg["role"] == "environment" else _ROLE_LABELS[msg["role"]]
        heading = f"## {label}"
        if count > 1:
            heading += f" (branch {index + 1} of {count})"
        lines += [neutralize(heading), ""]
        if msg["role"] == "environment":  # a tool's output, exactly as it came: a code block is text everywhere
            fence = _fence(msg["content"])
            lines += [fence, msg["content"].strip("\n"), fence, ""]
            continue
        if msg["reasoning"]:
            lines += ["<details>", "<summary>Reasoning</summary>", ""]
            lines += [neutralize(msg["reasoning"].strip("\n")), "", "</details>", ""]
        if msg["content"]:
            lines += [neutralize(msg["content"].strip("\n")), ""]
        calls = tool_calls_text(msg)
        if calls:
            fence = _fence("\n".join(calls))
            lines += ["*Tool calls:*", "", fence, *calls, fence, ""]
        used = _turn_documents(msg)
        if used:
            lines += _markdown_documents(used)
        note = _state_note(msg)
        if note:
            lines += [neutralize(f"*{note}*"), ""]
        made_with = provenance_line(msg)
        if made_with:  # our <sub>; its text (names from an imported file) escaped and inert
            lines += [f"<sub>{neutralize(html.escape(made_with))}</sub>", ""]
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
.documents { color: #6e6e73; font-size: 12px; margin: 6px 0 0; }
.attachments { margin: 0 0 20px; font-size: 13px; }
.attachments ul { margin: 4px 0 0; padding-left: 20px; }
.passages summary { cursor: pointer; font-size: 12px; color: #6e6e73; }
.passage { border-left: 3px solid #d2d2d7; padding: 0 12px; margin: 8px 0; color: #424245; }
.cite { font-size: 12px; font-weight: 600; color: #6e6e73; }
.provenance { color: #6e6e73; font-size: 11px; margin: 6px 0 0; }
.environment .body { border: 1px solid #d2d2d7; border-radius: 8px; padding: 4px 12px; }
.tool-calls { font-size: 12px; color: #6e6e73; margin: 8px 0 0; }
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
    from ..links import safe_markdown_it

    # Links only to http, https and mailto (olmo3.links, the chat view's allow-list too); others are text.
    md = safe_markdown_it("commonmark", {"html": False, "highlight": _highlight, "typographer": False})
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


def _html_documents(used: list[TurnAttachment]) -> str:
    """Which documents the turn used, and the passages it read (escaped: document text is content)."""
    parts = ['<p class="documents">Documents: ' + html.escape("; ".join(a.chip_label for a in used)) + "</p>"]
    passages = [(a, h) for a in used for h in a.passages]
    if passages:
        parts.append(f'<details class="passages"><summary>Passages used ({len(passages)})</summary>')
        for a, hit in passages:
            parts.append(
                f'<div class="passage"><div class="cite">{html.escape(f"{a.name}, {hit.page_label}")}</div>'
                f"{_plain(hit.text)}</div>"
            )
        parts.append("</details>")
    return "\n".join(parts)


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
    if conv.get("attachments"):
        out.append('<section class="attachments"><div class="role">Attached documents</div><ul>')
        out += [f"<li>{html.escape(_attachment_line(a))}</li>" for a in conv["attachments"]]
        out.append("</ul></section>")
    for msg in active_path(conv):
        index, count = msg["branch"]
        branch = f' <span class="branch">· branch {index + 1} of {count}</span>' if count > 1 else ""
        out.append(f'<section class="message {msg["role"]}">')
        label = tool_result_heading(msg) if msg["role"] == "environment" else _ROLE_LABELS[msg["role"]]
        out.append(f'<div class="role">{html.escape(label)}{branch}</div>')
        out.append('<div class="body">')
        if msg["role"] == "environment":  # a tool's output, exactly as it came (never Markdown)
            out.append(f"<pre><code>{html.escape(msg['content'])}</code></pre>")
            out += ["</div>", "</section>"]
            continue
        if msg["reasoning"]:
            out.append('<details class="reasoning"><summary>Reasoning</summary>')
            out.append(md.render(msg["reasoning"]))
            out.append("</details>")
        if msg["content"]:
            # Model replies are Markdown; what people type is shown exactly as typed.
            out.append(md.render(msg["content"]) if msg["role"] == "assistant" else _plain(msg["content"]))
        calls = tool_calls_text(msg)
        if calls:
            out.append('<p class="tool-calls">Tool calls:</p>')
            out.append(f"<pre><code>{html.escape(chr(10).join(calls))}</code></pre>")
        used = _turn_documents(msg)
        if used:
            out.append(_html_documents(used))
        note = _state_note(msg)
        if note:
            out.append(f'<p class="notice">{html.escape(note)}</p>')
        made_with = provenance_line(msg)
        if made_with:
            out.append(f'<p class="provenance">{html.escape(made_with)}</p>')
        out.append("</div>")
        out.append("</section>")
    out += ["</main>", "</body>", "</html>", ""]
    return "\n".join(out)
