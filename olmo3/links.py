"""One allow-list for every link the app shows or exports: ``http``, ``https`` and ``mailto``; the rest is text.

Text from a model, a person or an imported file decides what a link points at, and a link in an exported page
that is opened from disk resolves against ``file:``: ``/etc/passwd``, ``./x.html`` and ``//host/x`` reach local
files and shares, ``smb:``/``vnc:``/``ftp:`` and ``x-apple.systempreferences:``/``ms-settings:`` start other
programs. So a link stays live only if its scheme is on the list, after undoing what browsers undo: HTML
entities, surrounding spaces and control characters, tabs and newlines anywhere, letter case.

The chat view (``desktop/markdown.py``) and the HTML export (``olmo3/store/render.py``) both render Markdown with
:func:`safe_markdown_it`, whose link check is :func:`is_safe_url`: a link or image with any other destination is
not a link at all and shows as the text that was written. The Markdown export (:mod:`olmo3.store.mdsafe`) makes
such links text as well. Qt-free and MLX-free; markdown-it-py is imported only by :func:`safe_markdown_it`.
"""

from __future__ import annotations

import html
import re
from typing import Any, Final

__all__ = ["ALLOWED_SCHEMES", "is_safe_url", "safe_markdown_it"]

ALLOWED_SCHEMES: Final = frozenset({"http", "https", "mailto"})

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_STRIP = "".join(chr(c) for c in range(0x21))  # C0 controls and space: browsers strip them at both ends
_TAB_NEWLINE = re.compile(r"[\t\n\r]")  # browsers remove these anywhere in a URL


def is_safe_url(url: object) -> bool:
    """True only for an ``http:``, ``https:`` or ``mailto:`` URL (with a host, or an address for mailto)."""
    if not isinstance(url, str) or len(url) > 8192:
        return False
    text = _TAB_NEWLINE.sub("", html.unescape(url)).strip(_STRIP)
    if any(ord(c) < 0x20 or c == "\x7f" or c.isspace() for c in text):
        return False
    m = _SCHEME.match(text)
    if m is None:  # relative, /absolute, //protocol-relative, #fragment: all resolve against file: on disk
        return False
    scheme, rest = m.group(1).lower(), text[m.end() :]
    if scheme not in ALLOWED_SCHEMES:
        return False
    if scheme == "mailto":
        return bool(rest) and not rest.startswith("/")
    return bool(rest.replace("\\", "/").lstrip("/"))


def safe_markdown_it(preset: str = "commonmark", options: dict[str, Any] | None = None) -> Any:
    """A ``MarkdownIt`` whose links and images must pass :func:`is_safe_url` (raw HTML off unless asked).

    A link whose destination fails is not parsed as a link (markdown-it then shows the written text), and a
    ``link_open`` that still carries an unsafe ``href`` (a plugin, a later rule) is rendered without its anchor.
    """
    from markdown_it import MarkdownIt

    class _SafeMarkdownIt(MarkdownIt):
        def validateLink(self, url: str) -> bool:  # noqa: N802 - markdown-it's name
            return is_safe_url(url)

    md = _SafeMarkdownIt(preset, {"html": False, **(options or {})})
    rules: dict[str, Any] = getattr(md.renderer, "rules", {})
    default_open, default_close = rules.get("link_open"), rules.get("link_close")

    def link_open(renderer: Any, tokens: Any, idx: int, opts: Any, env: Any) -> str:
        token = tokens[idx]
        if not is_safe_url(token.attrGet("href") or ""):
            token.meta["unsafe"] = True
            _matching_close(tokens, idx).meta["unsafe"] = True
            return ""
        return str(
            default_open(renderer, tokens, idx, opts, env)
            if default_open
            else renderer.renderToken(tokens, idx, opts, env)
        )

    def link_close(renderer: Any, tokens: Any, idx: int, opts: Any, env: Any) -> str:
        if tokens[idx].meta.get("unsafe"):
            return ""
        return str(
            default_close(renderer, tokens, idx, opts, env)
            if default_close
            else renderer.renderToken(tokens, idx, opts, env)
        )

    md.add_render_rule("link_open", link_open)
    md.add_render_rule("link_close", link_close)
    return md


def _matching_close(tokens: Any, idx: int) -> Any:
    depth = 0
    for token in tokens[idx:]:
        if token.type == "link_open":
            depth += 1
        elif token.type == "link_close":
            depth -= 1
            if depth == 0:
                return token
    return tokens[idx]  # unbalanced: mark the opener itself (nothing else to hide)
