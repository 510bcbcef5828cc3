"""Split a document into overlapping passages of about N tokens that remember their pages.

Why it works this way:

* Retrieval finds passages, so a passage should read as a unit: cuts fall on sentence ends, and on a
  paragraph (or page) end when one is near enough (the passage is at least :data:`MIN_FILL` full there).
  A "sentence" longer than a whole passage (code, tables, text without punctuation) is cut at line ends,
  then between words, and only as a last resort inside a word.
* Consecutive passages overlap by whole sentences (about ``overlap`` tokens), so a fact that straddles a cut
  is still whole in one of them.
* A passage may run over a page break (short pages such as slides would otherwise make tiny passages), but
  it records the first and the last page it covers, so a citation is never wrong.
* The text of a passage is a slice of the page text, not a reassembly, so code keeps its lines and
  indentation, and anything in the document (``<|im_start|>`` included) stays exactly as it was.
* Tokens are counted by a function the caller passes (the model's tokenizer, in the app); the default,
  :func:`approx_tokens`, is a cheap estimate so the core works, and is tested, without a model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol

from .extract import Document, Page

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TARGET",
    "MIN_FILL",
    "Passage",
    "TokenCounter",
    "approx_tokens",
    "chunk",
    "page_label",
]


def _words(text: str) -> frozenset[str]:
    """A set of words written as one string (easier to read and edit than a list of quoted words)."""
    return frozenset(text.split())


TokenCounter = Callable[[str], int]

DEFAULT_TARGET: Final = 512
DEFAULT_OVERLAP: Final = 64
MIN_FILL: Final = 0.6

# Byte-level BPE vocabularies like Olmo-3's (about 100k entries) spend roughly one token on a short English
# word, a few on a long one, one per 3 digits, one per punctuation mark and about one per CJK character.
_APPROX: Final = re.compile(r"[A-Za-z]{1,7}|[0-9]{1,3}|[^\sA-Za-z0-9]")


def approx_tokens(text: str) -> int:
    """A cheap token estimate (within about 25% of a real ~100k BPE vocabulary on prose)."""
    return len(_APPROX.findall(text))


class _Encoder(Protocol):
    def encode(self, text: str, *, add_special_tokens: bool = ..., split_special_tokens: bool = ...) -> Any: ...


def content_token_counter(tokenizer: _Encoder) -> TokenCounter:
    """Count tokens with the model's (Hugging Face) tokenizer, the way document text must be encoded: as content.

    ``split_special_tokens=True`` makes ``<|im_start|>`` in a document count (and encode) as the characters
    it is, not as the control token; the session must encode the turn's document text the same way.
    """

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))

    return count


@dataclass(frozen=True)
class Passage:
    """A span of a document: its text (a verbatim slice), its pages and its token count."""

    ordinal: int
    page_start: int
    page_end: int
    text: str
    tokens: int

    @property
    def page_label(self) -> str:
        return page_label(self.page_start, self.page_end)


def page_label(first: int, last: int) -> str:
    """``"page 3"`` or ``"pages 3–4"``: how a passage is cited in the turn, under the reply and in exports."""
    return f"page {first}" if first == last else f"pages {first}–{last}"


class _Unit(NamedTuple):
    """A sentence (or a piece of one): where it is and what it costs."""

    page_index: int
    start: int
    end: int
    tokens: int
    boundary: bool  # it starts a paragraph or a page: a good place to cut before


_PARAGRAPH_BREAK: Final = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END: Final = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s)|[。！？]+[」』）]*")
_LINE_END: Final = re.compile(r"\n")
_SPACE: Final = re.compile(r"\s+")


def _spans(text: str, start: int, end: int, sep: re.Pattern[str], keep_sep: bool) -> Iterator[tuple[int, int]]:
    """Non-blank pieces of ``text[start:end]`` cut at ``sep`` (the separator ends the piece when ``keep_sep``)."""
    pos = start
    for m in sep.finditer(text, start, end):
        cut = m.end() if keep_sep else m.start()
        yield from _trim(text, pos, cut)
        pos = m.end()
    yield from _trim(text, pos, end)


def _trim(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        yield start, end


_ABBREVIATIONS: Final = _words(
    "st dr mr mrs ms mx prof sr jr no nos vs etc eg ie cf fig figs vol pp p ch sec eq approx ca inc ltd co"
)


def _sentences(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Sentence spans; a period after a known abbreviation or an initial, or before a lowercase word, is no end."""
    pos = start
    for m in _SENTENCE_END.finditer(text, start, end):
        if text[m.start()] == ".":
            word = re.search(r"(\w+)\W*$", text[max(start, m.start() - 12) : m.start()])
            if word and (len(word.group(1)) == 1 or word.group(1).lower() in _ABBREVIATIONS):
                continue
            after = _SPACE.match(text, m.end(), end)
            if after and after.end() < end and text[after.end()].islower():
                continue
        yield from _trim(text, pos, m.end())
        pos = m.end()
    yield from _trim(text, pos, end)


def _pieces(
    text: str, start: int, end: int, count: TokenCounter, limit: int, level: int = 0
) -> Iterator[tuple[int, int, int]]:
    """``(start, end, tokens)`` of pieces no larger than ``limit``: sentences, else lines, words, characters."""
    if level == 0:
        for s, e in _sentences(text, start, end):
            yield from _pieces(text, s, e, count, limit, 1)
        return
    n = count(text[start:end])
    if n <= limit:
        yield start, end, n
        return
    if level <= 2:  # too long a sentence: its lines, then its words, packed greedily up to the limit
        sep = _LINE_END if level == 1 else _SPACE
        parts = list(_spans(text, start, end, sep, keep_sep=False))
        if len(parts) > 1:
            yield from _pack(text, parts, count, limit, level + 1)
            return
        yield from _pieces(text, start, end, count, limit, level + 1)
        return
    mid = start + (end - start) // 2  # one giant "word": halve it until the halves fit
    if mid == start:
        yield start, end, n
        return
    yield from _pieces(text, start, mid, count, limit, level)
    yield from _pieces(text, mid, end, count, limit, level)


def _pack(
    text: str, parts: list[tuple[int, int]], count: TokenCounter, limit: int, level: int
) -> Iterator[tuple[int, int, int]]:
    """Join neighbouring parts while they fit; split the ones that alone are too large."""
    cur: tuple[int, int, int] | None = None
    for s, e in parts:
        for piece in _pieces(text, s, e, count, limit, level):
            if cur is not None:
                joined = count(text[cur[0] : piece[1]])
                if joined <= limit:
                    cur = (cur[0], piece[1], joined)
                    continue
                yield cur
            cur = piece
    if cur is not None:
        yield cur


def _units(pages: Sequence[Page], count: TokenCounter, limit: int) -> list[_Unit]:
    units: list[_Unit] = []
    for index, page in enumerate(pages):
        first_on_page = True
        for ps, pe in _spans(page.text, 0, len(page.text), _PARAGRAPH_BREAK, keep_sep=False):
            first_in_paragraph = True
            for s, e, n in _pieces(page.text, ps, pe, count, limit):
                units.append(_Unit(index, s, e, n, first_in_paragraph or first_on_page))
                first_in_paragraph = first_on_page = False
    return units


def _passage_text(pages: Sequence[Page], units: Sequence[_Unit]) -> tuple[str, int, int]:
    """The verbatim slice(s) of page text the units cover; pages are joined by a blank line."""
    parts: list[str] = []
    by_page: dict[int, tuple[int, int]] = {}
    for u in units:
        s, e = by_page.get(u.page_index, (u.start, u.end))
        by_page[u.page_index] = (min(s, u.start), max(e, u.end))
    for index, (s, e) in by_page.items():
        parts.append(pages[index].text[s:e])
    first, last = min(by_page), max(by_page)
    return "\n\n".join(parts), pages[first].number, pages[last].number


def chunk(
    doc: Document | Iterable[Page],
    *,
    target: int = DEFAULT_TARGET,
    overlap: int = DEFAULT_OVERLAP,
    count_tokens: TokenCounter = approx_tokens,
) -> list[Passage]:
    """Passages of at most about ``target`` tokens, overlapping by up to ``overlap`` tokens (see the module)."""
    if target < 1 or overlap < 0 or overlap >= target:
        raise ValueError(f"need 0 <= overlap < target (got target={target}, overlap={overlap})")
    pages = list(doc.pages if isinstance(doc, Document) else doc)
    units = _units(pages, count_tokens, target)
    tokens = [u.tokens for u in units]
    passages: list[Passage] = []
    start, done = 0, 0  # the next passage begins at unit `start`; units before `done` are already in one
    while done < len(units):
        end, total = start, 0
        while end < len(units) and (end <= done or total + tokens[end] <= target):
            total += tokens[end]
            end += 1
        if end < len(units):  # cut earlier, at the last paragraph or page start, if the passage is full enough
            for cut in range(end, done, -1):
                if units[cut].boundary:
                    if sum(tokens[start:cut]) >= MIN_FILL * target:
                        end = cut
                    break
        text, first, last = _passage_text(pages, units[start:end])
        passages.append(Passage(len(passages), first, last, text, count_tokens(text)))
        done, previous_start = end, start
        # The next passage repeats the last sentences of this one, up to `overlap` tokens, as long as the
        # repeat and the next new sentence fit together (and never the whole of this passage).
        start, carried = done, 0
        while done < len(units) and start - 1 > previous_start:
            n = tokens[start - 1]
            if carried + n > overlap or carried + n + tokens[done] > target:
                break
            carried += n
            start -= 1
    return passages
