"""One allow-list for links (http, https, mailto) in the chat view and every export; the rest is plain text.

Each destination below is written as a Markdown link, an angle-bracket link, an autolink, an image and a reference
link, in an assistant message; then the chat view's HTML, the HTML export and the Markdown export (rendered by a
permissive CommonMark renderer that follows any link and renders raw HTML, as another program might) must hold
no ``href`` or ``src`` outside the allow-list, and no raw HTML from the message.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest

from olmo3.links import is_safe_url
from olmo3.store.render import to_html, to_markdown

REFUSED = [
    "smb://fileserver/share/x",
    "vnc://attacker.example:5900",
    "ftp://attacker.example/file",
    "x-apple.systempreferences:com.apple.preference.security?Privacy",
    "ms-settings:privacy-webcam",
    "//attacker.example/x",
    "/etc/passwd",
    "./x.html",
    "../../secrets.txt",
    "x.html",
    "#top",
    "?q=1",
    "javascript:alert(1)",
    "JAVASCRIPT:alert(1)",
    "JaVaScRiPt:alert(1)",
    "jav&#x09;ascript:alert(1)",
    "&#106;avascript:alert(1)",
    "&#x6A;avascript:alert(1)",
    "javascript&colon;alert(1)",
    "%6Aavascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "DATA:text/html;base64,PHNjcmlwdD4=",
    "file:///etc/passwd",
    "FILE:///C:/Windows/win.ini",
    "vbscript:msgbox(1)",
    "tel:+15555550123",
    "sms:+15555550123",
    "ssh://attacker.example",
    "git://attacker.example/r",
    "irc://attacker.example",
    "news:comp.lang",
    "about:blank",
    "chrome://settings",
    "intent://scan#Intent;scheme=zxing;end",
    "steam://run/1",
    "zoommtg://zoom.us/join",
    "itms-services://?action=download-manifest&url=https://x",
    "x-apple-helpviewer://x",
    "http:",
    "https://",
    "https:///",
    "mailto:",
    "\\\\attacker.example\\share",
]
SAFE = [
    "https://allenai.org",
    "http://example.org/a?b=c&d=e#f",
    "HTTPS://EXAMPLE.ORG/Path",
    "mailto:someone@example.org",
    "https://example.org/a_(b)",
]
RAW_HTML = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<iframe src=https://attacker.example></iframe>",
    '<a href="javascript:alert(1)">x</a>',
    "<style>body{display:none}</style>",
    "<!-- hidden -->",
    "<div>\n*block* <b>html</b>\n</div>",
    "<svg onload=alert(1)>",
    "<details open><summary>x</summary></details>",
    '<form action="https://attacker.example"><input></form>',
]


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in ("href", "src", "action", "formaction", "xlink:href")]


def collect(html: str) -> Collector:
    c = Collector()
    c.feed(html)
    return c


def other_renderer(markdown: str) -> str:
    """A renderer that follows every link and renders raw HTML (what an exported .md may be opened in)."""
    from markdown_it import MarkdownIt

    class Permissive(MarkdownIt):
        def validateLink(self, url: str) -> bool:
            return True

    return str(Permissive("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown))


def forms(url: str) -> str:
    return "\n\n".join(
        [
            f"[click]({url})",
            f"[angle](<{url}>)",
            f"<{url}>",
            f"![image]({url})",
            f"[ref][r]\n\n[r]: {url}",
            f"| table | [cell]({url}) |\n|---|---|\n| a | b |",
            f"> quoted [q]({url})",
            f"- item [i]({url})",
        ]
    )


def conversation(text: str) -> dict[str, Any]:
    return {
        "format": "olmo-desktop.conversation",
        "version": 1,
        "id": "c",
        "title": "Links",
        "title_is_auto": False,
        "model_id": None,
        "model_revision": None,
        "system_prompt": None,
        "sampling": {},
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
        "pinned": False,
        "folder": None,
        "engine_state": None,
        "messages": [
            {
                "id": "m1",
                "parent_id": None,
                "role": "user",
                "content": text,
                "reasoning": "",
                "token_ids": None,
                "stats": None,
                "provenance": None,
                "state": "complete",
                "created_at": "2025-01-01T00:00:00Z",
                "active": True,
            },
            {
                "id": "m2",
                "parent_id": "m1",
                "role": "assistant",
                "content": text,
                "reasoning": text,
                "token_ids": None,
                "stats": None,
                "provenance": None,
                "state": "complete",
                "created_at": "2025-01-01T00:00:00Z",
                "active": True,
            },
        ],
    }


def surfaces(text: str) -> dict[str, str]:
    from desktop import markdown as chat_markdown

    conv = conversation(text)
    page = to_html(conv)
    return {
        "chat view": chat_markdown.to_html(text),
        "HTML export": page[page.index("<main>") :],  # the page's own head (its <style>, CSP) is ours
        "Markdown export, rendered elsewhere": other_renderer(to_markdown(conv)),
    }


@pytest.mark.parametrize("url", REFUSED)
def test_refused_destination_is_text_everywhere(url: str) -> None:
    assert not is_safe_url(url)
    for variant in (url, url.upper(), f"  {url}  ", url.replace(":", "&#58;", 1), url.replace(":", "&#x3A;", 1)):
        assert not is_safe_url(variant), variant
    for surface, html in surfaces(forms(url)).items():
        live = [u for u in collect(html).urls if u and not u.startswith("data:image/")]  # pygments never emits any
        assert live == [], f"{surface}: live links {live} for {url!r}"


@pytest.mark.parametrize("url", SAFE)
def test_allowed_destination_stays_a_link(url: str) -> None:
    assert is_safe_url(url)
    from desktop import markdown as chat_markdown

    for html in (chat_markdown.to_html(f"[click]({url})"), to_html(conversation(f"[click]({url})"))):
        assert [u for u in collect(html).urls] == [u for u in collect(html).urls if is_safe_url(u)]
        assert any(is_safe_url(u) for u in collect(html).urls)
    markdown = to_markdown(conversation(f"[click]({url})"))
    assert f"[click]({url})" in markdown  # untouched: it stays a link in other renderers


@pytest.mark.parametrize("raw", RAW_HTML)
def test_raw_html_in_messages_is_text_in_every_export(raw: str) -> None:
    our_tags = {"details", "summary"}  # the Markdown export's own reasoning block
    for surface, html in surfaces(f"before {raw} after\n\n{raw}").items():
        found = collect(html)
        if surface == "Markdown export, rendered elsewhere":
            tags = [t for t in found.tags if t not in {"h1", "h2", "p", "em", "strong", "pre", "code", "ul", "li"}]
            assert set(tags) <= our_tags and tags.count("details") == 1, (surface, tags)
        else:
            assert not {"script", "img", "iframe", "style", "svg", "form", "input"} & set(found.tags), surface
        assert found.urls == [] or all(is_safe_url(u) for u in found.urls), (surface, found.urls)


def test_code_keeps_its_text() -> None:
    """Escaping is for prose: HTML inside code spans and fences is exported exactly as written."""
    text = "Use `<b>` here.\n\n```html\n<script>x</script>\n```"
    markdown = to_markdown(conversation(text))
    assert "`<b>`" in markdown and "```html\n<script>x</script>\n```" in markdown


def test_title_system_prompt_and_model_are_text_too() -> None:
    conv = conversation("hi")
    conv["title"] = "<img src=x onerror=alert(1)> [t](smb://x)"
    conv["system_prompt"] = "<script>alert(1)</script>\n[s](file:///etc/passwd)"
    conv["model_id"] = "<b>model</b>"
    found = collect(other_renderer(to_markdown(conv)))
    assert not {"img", "script", "b"} & set(found.tags) and found.urls == []


def test_the_chat_view_opens_only_allowed_links(qtbot) -> None:
    """A click reaches the system (here: URL handlers registered with Qt) only for an allowed link."""
    from PySide6.QtCore import QObject, QUrl, Slot
    from PySide6.QtGui import QDesktopServices

    from desktop.rich_text import ProseView, open_link_if_safe

    class Handler(QObject):
        def __init__(self) -> None:
            super().__init__()
            self.opened: list[str] = []

        @Slot(QUrl)
        def open(self, url: QUrl) -> None:
            self.opened.append(bytes(url.toEncoded().data()).decode())

    handler = Handler()
    schemes = ("https", "http", "mailto", "smb", "file", "vnc", "x-apple.systempreferences", "javascript")
    for scheme in schemes:
        QDesktopServices.setUrlHandler(scheme, handler, "open")
    try:
        view = ProseView()
        qtbot.addWidget(view)
        for url in ("smb://host/share", "file:///etc/passwd", "vnc://h", "javascript:alert(1)"):
            view.anchorClicked.emit(QUrl(url))
            assert not open_link_if_safe(QUrl(url))
        view.anchorClicked.emit(QUrl("https://allenai.org/a%20b"))
        assert open_link_if_safe(QUrl("mailto:someone@example.org"))
        assert handler.opened == ["https://allenai.org/a%20b", "mailto:someone@example.org"]
    finally:
        for scheme in schemes:
            QDesktopServices.unsetUrlHandler(scheme)
