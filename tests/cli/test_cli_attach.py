"""``olmo3 chat --attach FILE …`` as the real console script: a Qt-written PDF and a Word file, a scripted chat,
one JSON line per turn with its documents; a file that can't be attached is one line on stderr and exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from doc_files import PLANTED_DOCX, PLANTED_PDF, memo_docx, report_pdf, scanned_pdf


def olmo3_script() -> str:
    beside = Path(sys.executable).with_name("olmo3")
    found = str(beside) if beside.exists() else shutil.which("olmo3")
    assert found, "the olmo3 console script is not installed (pip install -e .)"
    return found


def chat(model: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [olmo3_script(), "chat", "--model", str(model), "--max-tokens", "4", "--temp", "0"]
    cmd += ["--cache-dir", str(tmp_path / "kv"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_chat_with_attached_pdf_and_docx_writes_each_turns_documents(qapp, tiny_model_dir, tmp_path):
    pdf = report_pdf(tmp_path / "report.pdf")
    docx = memo_docx(tmp_path / "memo.docx")
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            [
                {"send": "Who sealed the copper vault, and in which year?"},
                {"send": "When does the ferry to Ostholm leave?"},
                {"regenerate": True},
            ]
        )
    )
    out = chat(tiny_model_dir, tmp_path, "--attach", str(pdf), "--attach", str(docx), "--script", str(script), "--json")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 3 and all("error" not in line for line in lines)

    first = {a["name"]: a for a in lines[0]["attachments"]}
    assert set(first) == {"report.pdf", "memo.docx"}
    memo, report = first["memo.docx"], first["report.pdf"]
    # The memo fits in half of the context: it goes in whole, once. The report does not: passages, with pages.
    assert memo["mode"] == "whole" and memo["passages"] == [] and memo["tokens"] > 0
    assert report["mode"] == "retrieved" and report["tokens"] > memo["tokens"]
    assert report["passages"] and all(set(p) <= {"page", "page_end", "text"} for p in report["passages"])
    planted = [p for p in report["passages"] if PLANTED_PDF in " ".join(p["text"].split())]
    assert planted and planted[0]["page"] == 5
    for key in ("name", "mode", "tokens", "passages"):
        assert key in memo and key in report

    # The follow-up finds the memo in the cached transcript and retrieves from the report again, for its question.
    second = lines[1]["attachments"]
    assert [(a["name"], a["mode"]) for a in second] == [("report.pdf", "retrieved")]
    assert lines[1]["stats"]["cached_tokens"] >= len(lines[0]["tokens"]) - 1
    assert lines[1]["tokens"][: len(lines[0]["tokens"])] == lines[0]["tokens"]
    assert "Ostholm" in PLANTED_DOCX and "Ostholm" not in json.dumps(second)  # the memo is not sent again
    # Regenerating answers the same message: the same documents.
    assert lines[2]["attachments"] == second


def test_a_file_that_cannot_be_attached_fails_before_loading(qapp, tiny_model_dir, tmp_path):
    scan = scanned_pdf(tmp_path / "scan.pdf")
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"send": "hi"}]))
    out = chat(tiny_model_dir, tmp_path, "--attach", str(scan), "--script", str(script), "--json")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == "olmo3: scan.pdf: this PDF has no text; it may be scanned"
    fake = tmp_path / "notes.txt"
    fake.write_bytes(b"\x00\x01\x02binary\xff\xfe" * 50)
    out = chat(tiny_model_dir, tmp_path, "--attach", str(fake), "--script", str(script), "--json")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("olmo3: notes.txt: ") and len(out.stderr.strip().splitlines()) == 1
