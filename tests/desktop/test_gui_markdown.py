"""Markdown rendering for the chat view: block splitting, stable prefixes for streaming, safety, highlighting."""

from __future__ import annotations

import random

import gui_helpers  # noqa: F401  (offscreen Qt)
import pytest
from gui_helpers import threads_are_joined  # noqa: F401 (autouse: no thread outlives a test)

from desktop import markdown as md
from desktop import samples

DOC = samples.ANSWER + "\n\n" + samples.long_answer(600)


def _normalise(blocks: list[md.Block]) -> list[tuple[str, str]]:
    """Blocks as comparable text: code verbatim, prose as its rendered HTML without whitespace differences."""
    out: list[tuple[str, str]] = []
    for block in blocks:
        if isinstance(block, md.CodeBlock):
            out.append(("code", block.language + "\n" + block.code))
        else:
            html = " ".join(block.html.split())
            if out and out[-1][0] == "prose":
                out[-1] = ("prose", out[-1][1] + " " + html)
            else:
                out.append(("prose", html))
    return out


def test_split_into_prose_and_code_blocks():
    blocks = md.render_blocks(samples.ANSWER)
    kinds = [type(b).__name__ for b in blocks]
    assert kinds == ["ProseBlock", "CodeBlock", "ProseBlock"]
    code = blocks[1]
    assert isinstance(code, md.CodeBlock) and code.language == "python" and code.closed
    assert code.code.startswith("def merge(") and code.code.endswith("(15, 18)]")
    assert "<table" in blocks[2].html and "<strong>O(n log n)</strong>" in blocks[2].html


@pytest.mark.parametrize("seed", range(6))
def test_stable_prefixes_render_like_the_whole_text(seed):
    """Rendering frozen prefixes separately and the rest afterwards gives what rendering everything at once gives."""
    rng = random.Random(seed)
    text = DOC
    cut = [*sorted(rng.sample(range(1, len(text)), 12)), len(text)]
    frozen: list[md.Block] = []
    stable = 0
    for end in cut:
        boundary = md.stable_prefix_end(text[:end], stable)
        assert stable <= boundary <= end
        if boundary > stable:
            frozen.extend(md.render_blocks(text[stable:boundary]))
            stable = boundary
    frozen.extend(md.render_blocks(text[stable:]))
    assert _normalise(frozen) == _normalise(md.render_blocks(text))


def test_stable_prefix_never_ends_inside_a_code_fence_or_a_line():
    text = "Intro paragraph.\n\n```python\ndef f():\n\n    return 1\n"
    assert md.stable_prefix_end(text) == text.index("```")  # the blank line inside the fence is not a boundary
    assert md.stable_prefix_end("one line without newline") == 0
    assert md.stable_prefix_end("para\n\n- item\n  more of item\n\n  indented continuation\n") == len("para\n\n")


def test_open_fence_tail():
    assert md.open_fence_tail("```py\nx = 1\ny = ") == ("py", "x = 1\ny = ")
    assert md.open_fence_tail("```py\nx = 1\n```\n") is None  # closed
    assert md.open_fence_tail("plain text\n") is None
    assert md.open_fence_tail("``` \ncode") == ("", "code")


def test_model_output_cannot_inject_html_links_or_images():
    html = md.to_html(
        "<script>alert(1)</script> [x](javascript:alert(1)) ![cat](https://example.com/cat.png) "
        "[ok](https://allenai.org)"
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="javascript:' not in html
    assert "<img" not in html and 'href="https://example.com/cat.png"' in html  # images become links
    assert 'href="https://allenai.org"' in html


def test_highlighting_covers_the_code_exactly():
    code = 'def f(x):\n    """Doc\n    string."""\n    return x  # done\n\n'
    pieces = list(md.highlight_tokens(code, "python"))
    assert "".join(v for _t, v in pieces) == code
    assert len({t for t, _v in pieces}) > 3  # real tokens, not one plain run
    assert "".join(v for _t, v in md.highlight_tokens("no language", "no-such-language")) == "no language"


def test_tokenize_round_trips():
    text = samples.long_answer(300)
    assert "".join(samples.tokenize(text)) == text
    assert len(samples.tokenize(text)) >= 300
