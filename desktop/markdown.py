"""Markdown for the chat view: parse with markdown-it-py, split into prose and code blocks, find stable prefixes.

Qt's rich-text engine (QTextDocument) understands a subset of HTML/CSS, so prose is rendered to plain HTML with a
theme style sheet, and top-level fenced code blocks become separate :class:`CodeBlock` pieces that the chat view
shows in their own panel (language label, Copy button, pygments colours).

Streaming needs more than a renderer: re-parsing a whole 2,000-token answer for every token would make the cost of
a token grow with the answer. :func:`stable_prefix_end` finds where the already-streamed text ends in complete
top-level blocks; those are rendered once and frozen, and only the short tail after them is re-rendered.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from markdown_it import MarkdownIt
from markdown_it.token import Token
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.token import _TokenType
from pygments.util import ClassNotFound

from olmo3.links import is_safe_url, safe_markdown_it


@dataclass(frozen=True)
class ProseBlock:
    """Rendered HTML of one or more consecutive non-code blocks, plus the markdown it came from."""

    html: str
    source: str


@dataclass(frozen=True)
class CodeBlock:
    """A top-level fenced (or indented) code block; ``closed`` is False while its closing fence has not arrived."""

    code: str
    language: str
    closed: bool = True


Block = ProseBlock | CodeBlock


def _render_image_as_link(self, tokens: list[Token], idx: int, options, env) -> str:
    """Model output must not make the app fetch remote images: show ``![alt](url)`` as a plain link."""
    token = tokens[idx]
    raw_src = str(token.attrGet("src") or "")
    src = html.escape(raw_src, quote=True)
    alt = html.escape(self.renderInlineAsText(token.children or [], options, env)) or src
    if not is_safe_url(raw_src):  # the parser already refuses these; never render one as a link
        return alt
    return f'<a href="{src}">{alt}</a>'


def _render_table_open(self, tokens: list[Token], idx: int, options, env) -> str:
    # QTextDocument ignores most table CSS; attributes it does honour give a clean grid.
    return '<table cellspacing="0" cellpadding="6" width="100%">\n'


@lru_cache(maxsize=1)
def parser() -> MarkdownIt:
    """CommonMark + GFM tables and strikethrough; raw HTML off (model output is text, never markup); links and
    images only to http, https and mailto (:func:`olmo3.links.is_safe_url`, the exports' allow-list too)."""
    md = safe_markdown_it("commonmark", {"html": False, "breaks": False, "linkify": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _render_image_as_link)
    md.add_render_rule("table_open", _render_table_open)
    return md


def _safe_link(url: str) -> bool:
    """The one allow-list (http, https, mailto): everything else shows as text."""
    return is_safe_url(url)


def render_blocks(source: str, *, streaming_tail: bool = False) -> list[Block]:
    """Split markdown into prose and top-level code blocks.

    With ``streaming_tail`` an unterminated fence at the end is reported as ``CodeBlock(closed=False)`` (the
    markdown spec treats it as running to the end of the document, which is what a stream looks like mid-block).
    """
    md = parser()
    tokens = md.parse(source)
    blocks: list[Block] = []
    pending: list[Token] = []
    lines = source.splitlines(keepends=True)

    def flush_prose() -> None:
        if not pending:
            return
        first = next((t.map for t in pending if t.map), None)
        last = next((t.map for t in reversed(pending) if t.map), None)
        text = "".join(lines[first[0] : last[1]]) if first and last else ""
        rendered = md.renderer.render(pending, md.options, {})
        blocks.append(ProseBlock(html=rendered, source=text))
        pending.clear()

    for token in tokens:
        if token.level == 0 and token.type in ("fence", "code_block"):
            flush_prose()
            language = token.info.strip().split(maxsplit=1)[0] if token.info.strip() else ""
            closed = True
            if streaming_tail and token.type == "fence" and token.map:
                closed = _fence_is_closed(lines[token.map[0] : token.map[1]], token.markup)
            code = token.content
            blocks.append(CodeBlock(code=code[:-1] if code.endswith("\n") else code, language=language, closed=closed))
        else:
            pending.append(token)
    flush_prose()
    return blocks


def _fence_is_closed(block_lines: list[str], markup: str) -> bool:
    if len(block_lines) < 2:
        return False
    last = block_lines[-1].strip()
    return last.startswith(markup[0] * len(markup)) and set(last) <= {markup[0]}


def to_html(source: str) -> str:
    """The whole text as one HTML fragment (used for user bubbles and exports); code stays inline ``<pre>``."""
    md = parser()
    return md.render(source)


# -------------------------------------------------------------------------------------------- streaming support

_FENCE_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_ATX_HEADING = re.compile(r"^#{1,6}(\s|$)")
_LIST_ITEM = re.compile(r"^(?:[-*+]|\d{1,9}[.)])\s")


def stable_prefix_end(text: str, start: int = 0, *, soft_limit: int = 1200) -> int:
    """The largest offset ``b >= start`` such that ``text[start:b]`` is made of complete top-level blocks.

    A later character can never change how ``text[start:b]`` renders, so it can be rendered once and frozen.
    Boundaries are placed at the start of a line that begins in column 0 (not inside a code fence) when
      - the previous line was blank (but not when the next text is indented: it may continue a list item),
      - the previous line was an ATX heading, or closed a top-level fence (then right after that line),
      - the line opens a top-level fence or is a heading (both interrupt a paragraph).
    When the unfinished part grows past ``soft_limit`` characters, a new top-level list item also counts, so a
    long list is rendered in pieces instead of being re-rendered whole for every token (the pieces render as
    consecutive lists, which look the same).
    Only lines that end in ``\\n`` are considered: the last, still-growing line is never part of the prefix.
    """
    boundary = start
    pos = start
    fence: tuple[str, int] | None = None  # (char, length) of the open top-level fence
    fence_indented = False
    prev_blank = False
    prev_closed_block = False
    n = len(text)
    while pos < n:
        end = text.find("\n", pos)
        if end < 0:
            break  # unterminated last line: still streaming
        line = text[pos:end]
        line_start = pos
        pos = end + 1
        if fence is not None:
            stripped = line.strip()
            char, length = fence
            if (
                stripped
                and set(stripped) == {char}
                and len(stripped) >= length
                and len(line) - len(line.lstrip(" ")) <= 3
            ):
                fence = None
                prev_closed_block = not fence_indented
                prev_blank = False
                if not fence_indented:
                    boundary = pos  # a top-level fence ends at its closing line, whatever follows
            continue
        blank = not line.strip()
        at_col0 = bool(line) and not line[0].isspace()
        match = _FENCE_OPEN.match(line)
        opens_fence = match is not None and not (match.group("fence")[0] == "`" and "`" in match.group("info"))
        if (
            at_col0
            and line_start > start
            and (
                prev_blank
                or prev_closed_block
                or opens_fence
                or _ATX_HEADING.match(line)
                or (_LIST_ITEM.match(line) and line_start - boundary > soft_limit)
            )
        ):
            boundary = line_start
        if opens_fence:
            assert match is not None
            fence = (match.group("fence")[0], len(match.group("fence")))
            fence_indented = not at_col0
            prev_blank = prev_closed_block = False
            continue
        prev_closed_block = at_col0 and bool(_ATX_HEADING.match(line))
        prev_blank = blank
    return boundary


def open_fence_tail(tail: str) -> tuple[str, str] | None:
    """If ``tail`` is one top-level fence that is still open, return ``(language, code_so_far)``.

    ``code_so_far`` holds only complete lines plus the partial last line, exactly as typed.
    """
    first_end = tail.find("\n")
    if first_end < 0:
        return None
    match = _FENCE_OPEN.match(tail[:first_end])
    if not match or match.group("indent"):
        return None
    char, length = match.group("fence")[0], len(match.group("fence"))
    info = match.group("info").strip()
    if char == "`" and "`" in info:
        return None
    body = tail[first_end + 1 :]
    # Closed already? Then it is not an open tail (the caller freezes it instead).
    for line in body.split("\n")[:-1]:
        stripped = line.strip()
        if stripped and set(stripped) == {char} and len(stripped) >= length:
            return None
    return (info.split(maxsplit=1)[0] if info else ""), body


# ------------------------------------------------------------------------------------------------- highlighting

_LANGUAGE_ALIASES = {
    "py": "python",
    "js": "javascript",
    "ts": "typescript",
    "sh": "bash",
    "shell": "bash",
    "zsh": "bash",
    "yml": "yaml",
    "c++": "cpp",
    "objc": "objective-c",
    "rs": "rust",
    "golang": "go",
}


@lru_cache(maxsize=64)
def lexer_for(language: str) -> Lexer:
    """A pygments lexer for a fence's info string; plain text when the language is unknown or empty."""
    name = _LANGUAGE_ALIASES.get(language.lower(), language.lower())
    if not name:
        return TextLexer(stripnl=False, ensurenl=False)
    try:
        return get_lexer_by_name(name, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False, ensurenl=False)


def highlight_tokens(code: str, language: str) -> Iterator[tuple[_TokenType, str]]:
    """``(token type, text)`` pairs covering ``code`` exactly (no added or stripped newlines)."""
    total = 0
    for ttype, value in lexer_for(language).get_tokens(code):
        if total + len(value) > len(code):
            value = value[: len(code) - total]
        if value:
            total += len(value)
            yield ttype, value
    if total < len(code):  # lexers may drop a trailing newline; never lose text
        yield (_TokenType(), code[total:])


def display_language(language: str) -> str:
    """The label shown in a code panel's header."""
    if not language:
        return "code"
    return _LANGUAGE_ALIASES.get(language.lower(), language.lower())


def plain_text(source: str) -> str:
    """Markdown without markup, for previews (sidebar snippets, window titles)."""
    text = re.sub(r"```.*?```", " ", source, flags=re.S)
    text = re.sub(r"[`*_#>|~\[\]]", "", text)
    return " ".join(text.split())


WARM_LANGUAGES = (
    "python",
    "javascript",
    "typescript",
    "bash",
    "json",
    "c",
    "cpp",
    "rust",
    "go",
    "java",
    "html",
    "css",
    "sql",
    "yaml",
    "swift",
)


def warm_up() -> None:
    """Import the parser and common lexers ahead of time (the first import of a lexer costs tens of ms)."""
    parser().parse("# warm\n\n```python\nx = 1\n```\n")
    for language in WARM_LANGUAGES:
        lexer_for(language)
