"""Synthetic conversation content for screenshots and the UI benchmark (no model needed)."""

from __future__ import annotations

import re

REASONING = (
    "The user wants a function that merges overlapping intervals. Classic approach: sort by start, then sweep "
    "and extend the last merged interval while the next one overlaps.\n\n"
    "Edge cases: empty input, intervals that only touch (treat [1, 2] and [2, 3] as overlapping), unsorted "
    "input. Complexity is O(n log n) for the sort. I'll show Python with type hints and a short test."
)

ANSWER = """Here's a compact way to **merge overlapping intervals** in Python. Sort by start, then sweep once:

```python
def merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    \"\"\"Merge overlapping (start, end) intervals; touching ones count as overlapping.\"\"\"
    merged: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


assert merge([(1, 3), (2, 6), (8, 10), (15, 18)]) == [(1, 6), (8, 10), (15, 18)]
```

Why it works:

1. After sorting, any interval that overlaps the current run must start before the run ends.
2. Extending with `max(...)` handles intervals fully contained in the run.
3. The sort dominates: **O(n log n)** time, O(n) extra space.

| Input | Output |
|---|---|
| `[(1, 4), (4, 5)]` | `[(1, 5)]` |
| `[]` | `[]` |

> Tip: if the intervals arrive already sorted, the sweep alone is O(n).
"""

USER_QUESTION = "How do I merge overlapping intervals in Python? Keep it short, with a test."

FOLLOW_UP = "Nice. Can it handle a million intervals quickly?"

DOCUMENT_ANSWER = (
    "According to the **Harbour Commission minutes** (page 17), the harbour master **Ingrid Valdottir** sealed the "
    "copper vault in **1903**, after the spring flood.\n\n"
    "The ferry timetable says the Ostholm ferry left the quay at seven every morning and returned at six, with a "
    "single crossing at ten on Sundays; nothing in the minutes says the service was interrupted that week."
)

FOLLOW_UP_ANSWER = (
    "Yes. A million tuples sort in well under a second in CPython, and the sweep is a single pass. "
    "If memory matters, sort in place with `intervals.sort()` and reuse the list."
)


def long_answer(target_tokens: int = 2000) -> str:
    """A realistic long markdown answer: sections with prose, lists, code blocks and tables."""
    sections: list[str] = []
    topics = [
        "tokenization",
        "attention",
        "KV caching",
        "sampling",
        "quantization",
        "sliding windows",
        "prefill",
        "batching",
        "memory",
        "evaluation",
    ]
    i = 0
    while _count_tokens("\n".join(sections)) < target_tokens:
        topic = topics[i % len(topics)]
        sections.append(f"## {i + 1}. {topic.title()}\n")
        sections.append(
            f"Understanding **{topic}** helps explain where the time goes when a local model answers. "
            f"In practice, `{topic.replace(' ', '_')}` interacts with the rest of the pipeline in ways that are "
            "easy to miss, so it is worth measuring rather than guessing. The numbers below come from a small "
            "experiment; treat them as orders of magnitude.\n"
        )
        sections.append(
            "- Measure first, then optimise the slowest stage.\n"
            f"- Keep the {topic} settings in one place so runs are comparable.\n"
            "- Prefer simple, predictable code paths over clever ones.\n"
        )
        if i % 2 == 0:
            sections.append(
                "```python\n"
                f"def measure_{topic.replace(' ', '_').lower()}(runs: int = 5) -> float:\n"
                "    import time\n"
                "    best = float('inf')\n"
                "    for _ in range(runs):\n"
                "        start = time.perf_counter()\n"
                "        work()  # the stage under test\n"
                "        best = min(best, time.perf_counter() - start)\n"
                "    return best\n"
                "```\n"
            )
        else:
            sections.append(
                "| Setting | Time (ms) | Memory (MB) |\n|---|---:|---:|\n"
                f"| baseline | {120 + i} | {512 + 8 * i} |\n| tuned | {80 + i} | {384 + 4 * i} |\n"
            )
        i += 1
    return "\n".join(sections)


_TOKEN_RE = re.compile(r"\s*\S+|\s+")


def _count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


def tokenize(text: str) -> list[str]:
    """Split text into word-ish pieces that concatenate back to ``text`` (a stand-in for model tokens)."""
    pieces = _TOKEN_RE.findall(text)
    assert "".join(pieces) == text
    return pieces
