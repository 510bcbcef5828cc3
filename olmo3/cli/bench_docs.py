"""``olmo3 bench docs``: how fast documents are read and searched (no model, no MLX).

Two numbers matter to a person attaching a file: how long the attachment takes before they can ask about it
(pages per second to extract, chunk and index a generated 300-page PDF), and what retrieval adds to every
message (latency of retrieving the passages for one message from 10,000, median and p95). Both run on generated text
(:mod:`olmo3.docs.synth`, :mod:`olmo3.docs.minipdf`) so the bench needs nothing but ``olmo3`` itself.
Results print as a table and as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ..docs import index
from ..docs.chunk import Passage, approx_tokens, chunk
from ..docs.extract import Document, Page, extract
from ..docs.minipdf import wrap, write_pdf
from ..docs.prompt import retrieve_for_turn
from ..docs.synth import paragraph, prose, sentence

PASSAGES_PER_DOCUMENT = 500
TURN_BUDGET = 4096  # tokens of passages per message


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def bench_ingest(tmp: Path, pages: int, rng: random.Random) -> dict[str, Any]:
    """Extract, chunk and index a generated PDF of ``pages`` pages; seconds per step and pages/s overall."""
    pdf = write_pdf(tmp / "bench.pdf", [wrap(prose(rng, 8)) for _ in range(pages)])
    conn = sqlite3.connect(tmp / "ingest.sqlite3")
    index.ensure_schema(conn)
    t0 = time.perf_counter()
    doc = extract(pdf)
    t1 = time.perf_counter()
    passages = chunk(doc)
    t2 = time.perf_counter()
    index.add_document(conn, "bench", doc, passages)
    t3 = time.perf_counter()
    conn.close()
    return {
        "pages": doc.page_count,
        "pdf_bytes": pdf.stat().st_size,
        "tokens": sum(p.tokens for p in passages),
        "passages": len(passages),
        "extract_s": round(t1 - t0, 3),
        "chunk_s": round(t2 - t1, 3),
        "index_s": round(t3 - t2, 3),
        "pages_per_s": round(doc.page_count / (t3 - t0), 1),
    }


def bench_retrieval(tmp: Path, passages: int, queries: int, rng: random.Random) -> dict[str, Any]:
    """Index ``passages`` passages (about 400 tokens each) in one conversation; time ``queries`` retrievals."""
    conn = sqlite3.connect(tmp / "retrieval.sqlite3")
    index.ensure_schema(conn)
    t0 = time.perf_counter()
    made = 0
    while made < passages:
        n = min(PASSAGES_PER_DOCUMENT, passages - made)
        texts = [paragraph(rng, 20) for _ in range(n)]
        doc = Document(f"volume-{made // PASSAGES_PER_DOCUMENT + 1}.pdf", "pdf", 0, "-", (Page(1, "(not stored)"),))
        index.add_document(
            conn, "bench", doc, [Passage(i, i // 2 + 1, i // 2 + 1, t, approx_tokens(t)) for i, t in enumerate(texts)]
        )
        made += n
    # Another conversation's attachments share the index: searching must still see only its own.
    other = Document("other.txt", "text", 0, "-", (Page(1, "(not stored)"),))
    index.add_document(conn, "other", other, [Passage(i, 1, 1, paragraph(rng, 20), 400) for i in range(200)])
    build_s = time.perf_counter() - t0
    questions = [sentence(rng).rstrip(".").replace("In ", "What happened in ", 1) + "?" for _ in range(queries)]
    # What one user message costs: the search and the choice of passages within a turn's budget.
    retrieve_for_turn(conn, "bench", questions[0], TURN_BUDGET)  # warm the page cache
    times, found = [], 0
    for q in questions:
        t = time.perf_counter()
        hits = retrieve_for_turn(conn, "bench", q, TURN_BUDGET)
        times.append((time.perf_counter() - t) * 1000)
        found += bool(hits)
    conn.close()
    return {
        "passages": made,
        "build_s": round(build_s, 2),
        "queries": queries,
        "queries_with_hits": found,
        "median_ms": round(statistics.median(times), 3),
        "p95_ms": round(_p95(times), 3),
        "max_ms": round(max(times), 3),
    }


def bench_docs(pages: int = 300, passages: int = 10_000, queries: int = 200, seed: int = 0) -> dict[str, Any]:
    """Both measurements, as the JSON-able result printed by ``olmo3 bench docs``."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ingest = bench_ingest(tmp, pages, rng)
        retrieval = bench_retrieval(tmp, passages, queries, rng)
    return {
        "benchmark": "docs",
        "sqlite": sqlite3.sqlite_version,
        "ingest": ingest,
        "retrieval": retrieval,
    }


def format_table(result: dict[str, Any]) -> str:
    i, r = result["ingest"], result["retrieval"]
    rows = [
        ("generated PDF", f"{i['pages']} pages, {i['pdf_bytes'] / 1e6:.1f} MB, {i['tokens']:,} tokens (approx.)"),
        ("extract", f"{i['extract_s']} s"),
        ("chunk", f"{i['chunk_s']} s ({i['passages']} passages)"),
        ("index", f"{i['index_s']} s"),
        ("extract + chunk + index", f"{i['pages_per_s']} pages/s"),
        ("search index", f"{r['passages']:,} passages, built in {r['build_s']} s"),
        ("retrieval latency", f"median {r['median_ms']} ms, p95 {r['p95_ms']} ms, max {r['max_ms']} ms"),
        ("queries with hits", f"{r['queries_with_hits']} of {r['queries']}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"olmo3 bench docs · SQLite {result['sqlite']}"]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point for ``olmo3 bench docs`` (``--pages``, ``--passages``)."""
    if args.pages < 1 or args.passages < 1:
        raise ValueError("--pages and --passages must be at least 1")
    result = bench_docs(pages=args.pages, passages=args.passages)
    print(format_table(result))
    print(json.dumps(result))
    return 0
