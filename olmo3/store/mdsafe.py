"""Markdown that another renderer shows as text where it should: raw HTML escaped, unsafe links and images inert.

The Markdown export copies messages as they were written, and an exported ``.md`` is opened in renderers we do not
control (editors, Git hosts, previewers) that render raw HTML and follow any link. :func:`neutralize` keeps the
text and its Markdown, and puts a backslash before the one character that makes something live:

* raw HTML (an HTML block's first ``<``, each inline tag's ``<``): CommonMark then shows the tag as text;
* a link or autolink whose destination fails :func:`olmo3.links.is_safe_url` (its ``[`` or ``<``);
* every image (its ``[``): opening the file must not fetch anything, as the HTML export never does.

Code spans and code blocks are left alone: what is inside them is text already. Positions come from markdown-it
itself (inline rules are wrapped to record where they matched), so ``<b>`` in prose is escaped and `` `<b>` `` in
code is not. The result is parsed again until nothing live is left; if that does not settle (it should not
happen), the whole text is put in a code fence, which is text in every renderer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from ..links import is_safe_url

__all__ = ["neutralize"]

MAX_PASSES: Final = 8
_WATCHED: Final = ("link", "image", "autolink", "html_inline")


class _Recorder:
    """A permissive markdown-it (HTML on, every link accepted) that notes where live things start."""

    def __init__(self) -> None:
        from markdown_it import MarkdownIt

        class _Permissive(MarkdownIt):
            def validateLink(self, url: str) -> bool:  # noqa: N802 - markdown-it's name
                return True  # see every link; we judge them ourselves

        self.md = _Permissive("commonmark", {"html": True})
        self.md.enable(["table", "strikethrough"])
        self.current: Any = None
        self.found: list[tuple[Any, int, str, str]] = []  # (inline token, position in its content, kind, url)
        for rule in list(self.md.inline.ruler.__rules__):
            if rule.name in _WATCHED:
                self.md.inline.ruler.at(rule.name, self._wrap(rule.name, rule.fn))
        self.md.core.ruler.at("inline", self._core_inline)

    def _core_inline(self, state: Any) -> None:
        for token in state.tokens:
            if token.type == "inline":
                if token.children is None:
                    token.children = []
                self.current = token
                state.md.inline.parse(token.content, state.md, state.env, token.children)
        self.current = None

    def _wrap(self, name: str, fn: Callable[[Any, bool], bool]) -> Callable[[Any, bool], bool]:
        def rule(state: Any, silent: bool) -> bool:
            start, count = state.pos, len(state.tokens)
            matched = fn(state, silent)
            current = self.current
            if matched and not silent and current is not None and state.src is current.content:
                # The first token of the match (pending text before it is pushed first).
                first = next((t for t in state.tokens[count:] if t.type in ("link_open", "image")), None)
                url = ""
                if first is not None:
                    url = str(first.attrGet("src") if name == "image" else first.attrGet("href") or "")
                self.found.append((current, start, name, url))
            return matched

        return rule

    def parse(self, text: str) -> list[Any]:
        self.found = []
        return list(self.md.parse(text))


def _line_starts(text: str) -> list[int]:
    starts = [0]
    starts += [m.end() for m in re.finditer("\n", text)]
    return starts


def _source_offset(text: str, starts: list[int], token: Any, pos: int) -> int | None:
    """Where ``token.content[pos]`` lies in ``text`` (None if the line cannot be matched)."""
    if token.map is None:
        return None
    content: str = token.content
    before = content[:pos]
    k = before.count("\n")
    col = pos - (before.rfind("\n") + 1)
    line_no = int(token.map[0]) + k
    if line_no >= len(starts):
        return None
    line_end = starts[line_no + 1] - 1 if line_no + 1 < len(starts) else len(text)
    line = text[starts[line_no] : line_end]
    content_line = content.split("\n")[k].rstrip()
    if not content_line:
        return None
    base = len(line.rstrip()) - len(content_line)  # a paragraph's lines are suffixes of the source lines
    if base < 0 or line[base : base + len(content_line)] != content_line:
        base = line.find(content_line)  # table cells, headings: the text is somewhere in the line
        if base < 0:
            return None
    return starts[line_no] + base + col


def _edits(text: str, recorder: _Recorder) -> tuple[set[int], bool]:
    """Offsets to put a backslash before, and whether everything live could be located."""
    tokens = recorder.parse(text)
    starts = _line_starts(text)
    edits: set[int] = set()
    located = True
    for token in tokens:
        if token.type == "html_block" and token.map is not None:
            line_start = starts[token.map[0]]
            lt = text.find("<", line_start)
            if lt < 0:
                located = False
            else:
                edits.add(lt)
    for token, pos, kind, url in recorder.found:
        if kind in ("link", "autolink") and is_safe_url(url):
            continue
        target = pos + 1 if kind == "image" else pos  # the image's "[" after its "!"
        offset = _source_offset(text, starts, token, target)
        expected = "[" if kind in ("link", "image") else "<"
        if offset is None or offset >= len(text) or text[offset] != expected:
            located = False
            continue
        edits.add(offset)
    return edits, located


def _fence(text: str) -> str:
    longest = max((len(m.group()) for m in re.finditer("`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def neutralize(text: str) -> str:
    """``text`` as Markdown that renders no raw HTML, no image and no link outside the allow-list."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not any(c in text for c in "<[!"):
        return text
    recorder = _Recorder()
    work = text.replace("\x00", "\ufffd")  # what markdown-it's normalize step does (same length)
    for _ in range(MAX_PASSES):
        edits, located = _edits(work, recorder)
        if not edits:
            return work if located else _fence(work)
        for offset in sorted(edits, reverse=True):
            work = work[:offset] + "\\" + work[offset:]
    return _fence(text)
