"""Tests for olmo3.store.interchange: lossless JSON round trip, strict import, Markdown, safe offline HTML."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from olmo3.store import ConversationStore, interchange


@pytest.fixture
def store(tmp_path: Path):
    s = ConversationStore(tmp_path / "conversations.sqlite3")
    yield s
    s.close()


def build_branchy(store: ConversationStore) -> str:
    """A conversation with branches, reasoning, token ids, stats, provenance and engine state."""
    cid = store.create_conversation(
        model_id="allenai/Olmo-3-7B-Think",
        model_revision="0123456789abcdef",
        system_prompt="You are Olmo.\nBe kind.",
        sampling={"temperature": 0.6, "top_p": 0.95, "seed": 3},
        folder="Research",
    )
    u1 = store.append_message(cid, None, "user", "Explain `git rebase` vs merge — briefly?")
    prov = {
        "seed": 3,
        "sampling": {"temperature": 0.6},
        "model": "allenai/Olmo-3-7B-Think",
        "revision": "0123456789abcdef",
        "template_sha256": "f00d",
    }
    a1 = store.begin_stream(cid, u1, provenance=prov)
    store.stream_append(a1, "They want a comparison.", "reasoning")
    store.stream_append(a1, "Rebase **rewrites** history.\n\n```bash\ngit rebase main\n```\n")
    store.finish_stream(a1, token_ids=[100257, 882, 0, 4294967295], stats={"ttft_s": 0.12, "tok_s": 41.0})
    a2 = store.append_message(cid, u1, "assistant", "Merge keeps history.", provenance=prov, state="interrupted")
    store.append_message(cid, a2, "user", "Thanks! ünïcödé 🙂")
    store.set_active(a1)
    store.set_engine_state(cid, {"transcript": [1, 2, 3], "leaf": a1, "nodes": {u1: {"n": 1}, a2: {"n": 2}}})
    store.pin(cid)
    return cid


def normalize_ids(obj: Any, ids: set[str]) -> Any:
    """Replace every id (by first appearance) with a placeholder, to compare across imports."""
    names: dict[str, str] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, str) and value in ids:
            return names.setdefault(value, f"<id{len(names)}>")
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {walk(k): walk(v) for k, v in value.items()}
        return value

    return walk(obj)


def ids_of(conv: dict[str, Any]) -> set[str]:
    return {conv["id"], *(m["id"] for m in conv["messages"])}


# ---- JSON round trip ---------------------------------------------------------------------------


def test_json_round_trip_is_lossless(store: ConversationStore) -> None:
    cid = build_branchy(store)
    first = store.export_dict(cid)
    text1 = interchange.to_json(first)
    assert json.loads(text1)["format"] == "olmo-desktop.conversation"
    assert json.loads(text1)["version"] == interchange.VERSION == 3
    assert interchange.to_json(interchange.from_json(text1)) == text1  # parse + validate changes nothing

    new_id = store.import_conversation(interchange.from_json(text1))
    second = store.export_dict(new_id)
    text2 = interchange.to_json(second)
    assert new_id != cid
    assert not ids_of(first) & ids_of(second)  # everything got new ids
    assert normalize_ids(json.loads(text2), ids_of(second)) == normalize_ids(json.loads(text1), ids_of(first))
    # Text identical apart from ids, and a second generation too.
    strip = lambda text, conv: re.sub("|".join(map(re.escape, ids_of(conv))), "ID", text)  # noqa: E731
    assert strip(text2, second) == strip(text1, first)
    third = store.export_dict(store.import_conversation(interchange.from_json(text2)))
    assert strip(interchange.to_json(third), third) == strip(text1, first)

    # The tree, the engine state's references and the list fields survived for real.
    assert len(second["messages"]) == 4
    assert [m.content for m in store.active_path(new_id)][-1].startswith("Rebase")
    by_content = {m.content: m.id for m in store.tree(new_id)}
    assert (
        store.get_engine_state(new_id)["leaf"]
        == by_content["Rebase **rewrites** history.\n\n```bash\ngit rebase main\n```\n"]
    )
    conv = store.get_conversation(new_id)
    assert conv.pinned and conv.folder == "Research" and conv.model_revision == "0123456789abcdef"
    assert second["messages"][1]["token_ids"] == [100257, 882, 0, 4294967295]
    assert second["messages"][1]["provenance"]["template_sha256"] == "f00d"
    assert second["messages"][2]["state"] == "interrupted"


def test_import_of_a_mid_stream_export(store: ConversationStore) -> None:
    cid = store.create_conversation()
    mid = store.begin_stream(cid, None)
    store.stream_append(mid, "half")  # buffered text is part of the export
    data = store.export_dict(cid)
    assert data["messages"][0]["content"] == "half" and data["messages"][0]["state"] == "streaming"
    new = store.import_conversation(data)
    assert store.tree(new)[0].state == "interrupted"
    assert store.tree(new)[0].content == "half"


# ---- strict validation -----------------------------------------------------------------------


def valid_dict(store: ConversationStore) -> dict[str, Any]:
    return store.export_dict(build_branchy(store))


def broken(base: dict[str, Any], change) -> dict[str, Any]:
    data = copy.deepcopy(base)
    change(data)
    return data


def test_from_json_rejects_bad_files_clearly(store: ConversationStore) -> None:
    base = valid_dict(store)
    mid1 = base["messages"][1]["id"]

    def set_(path: tuple, value: Any):
        def change(d: dict[str, Any]) -> None:
            target = d
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value

        return change

    def delete(path: tuple):
        def change(d: dict[str, Any]) -> None:
            target = d
            for key in path[:-1]:
                target = target[key]
            del target[path[-1]]

        return change

    cases = [
        (set_(("format",), "something.else"), r"not an Olmo Desktop conversation.*'something.else'"),
        (delete(("format",)), r"not an Olmo Desktop conversation"),
        (set_(("version",), 4), r"unsupported conversation format version 4"),
        (set_(("version",), True), r"unsupported conversation format version True"),
        (delete(("title",)), r"missing field 'title'"),
        (delete(("messages", 1, "role")), r"messages\[1\]\.missing field 'role'"),
        (set_(("messages", 0, "surprise"), 1), r"messages\[0\]\.unknown field 'surprise'"),
        (set_(("title",), 42), r"title: expected a string, got 42"),
        (set_(("pinned",), "yes"), r"pinned: expected true or false"),
        (set_(("sampling",), [1]), r"sampling: expected an object"),
        (set_(("created_at",), "yesterday"), r"created_at: expected an ISO 8601"),
        (set_(("messages",), {}), r"messages: expected a list"),
        (set_(("messages", 2, "role"), "robot"), r"messages\[2\]\.role: expected one of"),
        (
            set_(("messages", 1, "token_ids"), [1, "2"]),
            r"messages\[1\]\.token_ids: expected a list of non-negative integers",
        ),
        (set_(("messages", 1, "token_ids"), [1, -2]), r"messages\[1\]\.token_ids"),
        (set_(("messages", 1, "token_ids"), [True]), r"messages\[1\]\.token_ids"),
        (set_(("messages", 1, "stats"), "fast"), r"messages\[1\]\.stats: expected an object or null"),
        (set_(("messages", 3, "active"), 1), r"messages\[3\]\.active: expected true or false"),
        (set_(("messages", 3, "parent_id"), "ghost"), r"messages\[3\]\.parent_id: refers to unknown message 'ghost'"),
        (set_(("messages", 2, "id"), mid1), r"messages\[2\]\.id: duplicate id"),
        (set_(("messages", 0, "parent_id"), base["messages"][3]["id"]), r"loops back"),
        (set_(("messages", 2, "active"), True), r"exactly one of the replies to .* must be active, found 2"),
        (set_(("messages", 0, "active"), False), r"exactly one of the root messages must be active, found 0"),
    ]
    before = len(store.list_conversations())
    for change, pattern in cases:
        data = broken(base, change)
        with pytest.raises(ValueError, match=pattern):
            interchange.from_json(json.dumps(data))
        with pytest.raises(ValueError, match=pattern):
            store.import_conversation(data)
    assert len(store.list_conversations()) == before  # nothing was imported

    for text, pattern in [
        ("{not json", r"not valid JSON: .* line 1, column 2"),
        ("", r"not valid JSON"),
        ("[1, 2]", r"expected a JSON object at the top level, got list"),
        ('"hello"', r"expected a JSON object"),
        (b"\xff\xfe\x00garbage", r"not a UTF-8 text file"),
        (json.dumps({"format": "olmo-desktop.conversation", "version": 1}), r"missing field 'id'"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            interchange.from_json(text)


def test_import_accepts_children_before_parents(store: ConversationStore) -> None:
    data = valid_dict(store)
    data["messages"] = list(reversed(data["messages"]))
    new = store.import_conversation(data)
    assert store.active_path(new)[0].content.startswith("Explain")
    assert len(store.tree(new)) == 4


# ---- Markdown ----------------------------------------------------------------------------------


def test_markdown_shows_active_branch_with_reasoning(store: ConversationStore) -> None:
    data = valid_dict(store)
    data["messages"][1]["reasoning"] += " </details> sneaky"
    md = interchange.to_markdown(data)
    assert md.startswith(f"# {data['title']}\n")
    assert "allenai/Olmo-3-7B-Think @ 0123456789ab" in md
    assert "> You are Olmo.\n> Be kind." in md
    assert "## You\n\nExplain `git rebase` vs merge — briefly?" in md
    assert "## Assistant (branch 1 of 2)" in md
    assert "<details>\n<summary>Reasoning</summary>\n\nThey want a comparison. \\</details> sneaky\n\n</details>" in md
    assert "```bash\ngit rebase main\n```" in md
    assert md.count("</details>") - md.count("\\</details>") == 1  # the one closing our block
    assert "Merge keeps history." not in md  # the other branch is not shown
    store.set_active(data["messages"][2]["id"])
    md2 = interchange.to_markdown(store.export_dict(data["id"]))
    assert "Merge keeps history." in md2 and "*This reply was interrupted.*" in md2
    assert "Thanks! ünïcödé 🙂" in md2


# ---- HTML --------------------------------------------------------------------------------------

VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}


class Collector(HTMLParser):
    """Visible text, tags and attributes, checking that every non-void tag is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.stack: list[str] = []
        self.style = ""
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        if tag not in VOID:
            self.stack.append(tag)
        if tag in ("style", "title"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag in ("style", "title"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "style":
            self.style += data
        if not self._skip:
            self.text.append(data)


def parse(page: str) -> Collector:
    c = Collector()
    c.feed(page)
    c.close()
    assert c.stack == [], f"unclosed tags: {c.stack}"
    return c


NASTY_USER = "<script>alert('user')</script> AT&T &amp; &lt;b&gt; &#x3C;script&#x3E; `tick` ```not a fence"
LONG_LINE = "x" * 5000 + "END"
NASTY_ASSISTANT = f"""Here is <script>alert(1)</script> and <img src=x onerror=alert(2)> inline.

Entities: &lt;script&gt; &amp;amp; &copy;

```html
<script>evil()</script>
</pre></code><b>escape attempt</b>
```

```
plain {LONG_LINE}
```

```no-such-language
a < b && c > d
```

[click](javascript:alert(3)) [site](https://example.com) ![tracker](https://evil.example/t.png)

`inline <code>` and {LONG_LINE}
"""


def nasty_conv(store: ConversationStore) -> dict[str, Any]:
    cid = store.create_conversation(title="<script>alert('title')</script> & co", model_id="m")
    u = store.append_message(cid, None, "user", NASTY_USER)
    store.append_message(cid, u, "assistant", NASTY_ASSISTANT, reasoning="Think <script>x</script> **bold**")
    return store.export_dict(cid)


def test_html_escapes_everything_and_stays_offline(store: ConversationStore) -> None:
    page = interchange.to_html(nasty_conv(store))
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert 'http-equiv="Content-Security-Policy"' in page and "default-src 'none'" in page

    doc = parse(page)
    # Only harmless elements, no attribute that loads anything or runs code, no CSS fetches.
    assert set(doc.tags) <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "main",
        "h1",
        "p",
        "div",
        "section",
        "details",
        "summary",
        "pre",
        "code",
        "span",
        "a",
        "strong",
        "em",
    }
    loading = ("src", "srcset", "background", "poster", "data")
    assert [k for k, _ in doc.attrs if k in loading or k.startswith("on")] == []
    assert "javascript:" not in " ".join(v or "" for _, v in doc.attrs)
    assert "url(" not in doc.style and "@import" not in doc.style
    hrefs = [v for k, v in doc.attrs if k == "href"]
    assert hrefs == ["https://example.com"]  # a plain link; nothing is loaded by opening the page

    text = "".join(doc.text)
    # What the user typed survives exactly, entities and all.
    assert NASTY_USER in text
    assert "<script>alert('title')</script> & co" in text
    # Model text is Markdown: tags show as text, code keeps every character.
    assert "Here is <script>alert(1)</script> and <img src=x onerror=alert(2)> inline." in text
    assert "<script>evil()</script>\n</pre></code><b>escape attempt</b>" in text
    assert "a < b && c > d" in text
    assert "plain " + LONG_LINE in text and text.count(LONG_LINE) == 2
    assert "Think <script>x</script>" in text
    assert "[image: tracker]" in text


def test_html_highlights_code_and_renders_markdown(store: ConversationStore) -> None:
    cid = store.create_conversation(title="Code")
    u = store.append_message(cid, None, "user", "python please")
    reply = "**Sure**:\n\n```python\ndef f(x):\n    return x  # </pre>\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    store.append_message(cid, u, "assistant", reply)
    page = interchange.to_html(store.export_dict(cid))
    assert "<strong>Sure</strong>" in page
    assert "<table>" in page
    block = re.search(r'<pre class="code" data-lang="python"><code>(.*?)</code></pre>', page, re.S)
    assert block is not None
    assert 'style="color:' in block.group(1)  # pygments inline styles
    assert "&lt;/pre&gt;" in block.group(1)
    assert page.count("<pre") == page.count("</pre>") == 1
    doc = parse(page)
    assert "def f(x):\n    return x  # </pre>" in "".join(doc.text)


def test_html_and_markdown_of_empty_conversation(store: ConversationStore) -> None:
    data = store.export_dict(store.create_conversation())
    assert parse(interchange.to_html(data)).stack == []
    assert interchange.to_markdown(data).startswith("# New conversation\n")
    assert interchange.from_json(interchange.to_json(data))["messages"] == []


def test_replies_carry_their_provenance_in_full_and_in_one_line(store: ConversationStore) -> None:
    from olmo3.store.render import provenance_line

    cid = store.create_conversation(model_id="mlx-community/Olmo-3-7B-Think-4bit", model_revision="5c8a0e4f93b1d27a")
    user = store.append_message(cid, None, "user", "Why is the sky blue? <b>bold</b>")
    made_with = {
        "sampling": {"temperature": 0.6, "top_p": 0.95, "top_k": 50, "seed": 77, "thinking_budget": 4096},
        "seed": 77,
        "seed_was_random": True,
        "model": "Olmo 3 7B Think · 4-bit",
        "model_repo_id": "mlx-community/Olmo-3-7B-Think-4bit",
        "model_revision": "5c8a0e4f93b1d27a6e0f",
        "model_fingerprint": "9f3c1a7e52d04b86",
        "thinking_budget": 4096,
        "keep_reasoning": False,
        "kv_bits": 8,
        "engine_version": "0.1.0",
    }
    stats = {"reasoning_stopped": True, "reasoning_tokens": 4096, "answer_tokens": 12}
    store.append_message(cid, user, "assistant", "Rayleigh.", reasoning="…", stats=stats, provenance=made_with)
    conv = store.export_dict(cid)
    assert conv["messages"][1]["provenance"] == made_with  # JSON: the whole record
    line = (
        "mlx-community/Olmo-3-7B-Think-4bit @ 5c8a0e4f93b1 · temperature 0.6 · top P 0.95 · top K 50 · "
        "seed 77 (random) · thinking budget 4,096 (stopped at 4,096 tokens) · earlier reasoning dropped · 8-bit KV"
    )
    assert provenance_line(conv["messages"][1]) == line
    assert provenance_line(conv["messages"][0]) is None
    assert f"<sub>{line}</sub>" in interchange.to_markdown(conv)
    assert f'<p class="provenance">{line}</p>' in interchange.to_html(conv)
    # Replies from before provenance was recorded (only the GUI's own keys) get no line.
    old = {**conv["messages"][1], "provenance": {"thought_s": 3.2}}
    assert provenance_line(old) is None


# ---- tool turns --------------------------------------------------------------------------------


def build_tool_turn(store: ConversationStore) -> tuple[str, dict[str, str]]:
    """A turn that called a tool: the user asks, the reply calls (streamed, then finished with its calls), the
    tool's result is an environment message, and the final reply reads it."""
    cid = store.create_conversation()
    ids: dict[str, str] = {}
    ids["user"] = store.append_message(cid, None, "user", "What is 2 + 40?")
    ids["call"] = store.begin_stream(cid, ids["user"])
    store.stream_append(ids["call"], "Let me add them.")
    calls = {"calls": [{"name": "add", "arguments": {"a": 2, "b": 40}}], "raw_calls": "add(a=2, b=40)"}
    store.finish_stream(ids["call"], token_ids=[1, 2, 3], tool=calls)
    result = {"name": "add", "server": "calculator", "arguments": {"a": 2, "b": 40}, "is_error": False}
    ids["result"] = store.append_message(cid, ids["call"], "environment", "42 (from the abacus)", tool=result)
    ids["answer"] = store.append_message(cid, ids["result"], "assistant", "2 + 40 = **42**.")
    return cid, ids


def test_tool_turns_are_stored_searchable_and_exported(store: ConversationStore) -> None:
    cid, ids = build_tool_turn(store)
    path = store.active_path(cid)
    assert [m.role for m in path] == ["user", "assistant", "environment", "assistant"]
    assert path[1].tool is not None and path[1].tool["raw_calls"] == "add(a=2, b=40)"
    assert path[2].tool == {"name": "add", "server": "calculator", "arguments": {"a": 2, "b": 40}, "is_error": False}
    # Search finds the call (its name and arguments) and the tool's result, like any message.
    assert {h.message_id for h in store.search("abacus")} == {ids["result"]}
    assert ids["call"] in {h.message_id for h in store.search("add")}
    assert {h.message_id for h in store.search("calculator")} == {ids["result"]}

    # JSON: lossless, tool data included; a duplicate keeps it too.
    data = store.export_dict(cid)
    text = interchange.to_json(data)
    assert json.loads(text)["messages"][1]["tool"]["calls"][0] == {"name": "add", "arguments": {"a": 2, "b": 40}}
    copy_id = store.import_conversation(interchange.from_json(text))
    assert [m.tool for m in store.active_path(copy_id)] == [m.tool for m in path]
    assert {h.conv_id for h in store.search("abacus")} == {cid, copy_id}
    dup = store.duplicate(cid)
    assert [m.tool for m in store.active_path(dup)] == [m.tool for m in path]

    # Markdown and HTML show the call and the result (as text, never Markdown).
    md = interchange.to_markdown(data)
    assert "*Tool calls:*\n\n```\nadd(a=2, b=40)\n```" in md
    assert "## Tool result · add (calculator)\n\n```\n42 (from the abacus)\n```" in md
    page = interchange.to_html(data)
    assert "Tool result · add (calculator)" in page and "<pre><code>add(a=2, b=40)</code></pre>" in page


def test_exports_from_before_tool_turns_still_import(store: ConversationStore) -> None:
    data = store.export_dict(build_branchy(store))
    old = copy.deepcopy(data)
    old["version"] = 2
    for m in old["messages"]:
        del m["tool"]  # version 2 files, written before tool turns, have no such key
    new = store.import_conversation(interchange.from_json(interchange.to_json(old)))
    assert all(m.tool is None for m in store.tree(new))
    with pytest.raises(ValueError, match=r"messages\[0\]\.missing field 'tool'"):
        interchange.validate_conversation({**old, "version": 3})
    bad = copy.deepcopy(data)
    bad["messages"][0]["tool"] = "add()"
    with pytest.raises(ValueError, match=r"messages\[0\]\.tool: expected an object or null"):
        interchange.validate_conversation(bad)


def test_salvage_keeps_tool_turns(tmp_path: Path) -> None:
    from olmo3.store.salvage import salvage

    path = tmp_path / "tools.sqlite3"
    with ConversationStore(path) as store:
        cid, ids = build_tool_turn(store)
        before = [(m.role, m.content, m.tool) for m in store.active_path(cid)]
    salvage(path, tmp_path / "out.sqlite3")
    with ConversationStore(tmp_path / "out.sqlite3") as store:
        assert [(m.role, m.content, m.tool) for m in store.active_path(cid)] == before
        assert {h.message_id for h in store.search("calculator")} == {ids["result"]}
