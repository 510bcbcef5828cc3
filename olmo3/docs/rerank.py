"""Term proximity: a passage where the question's rare words occur *together* beats one where they are scattered.

Why: BM25 scores a passage as a bag of words. A 512-token passage that mentions a person in one sentence
and a building in another scores like the one sentence that says what that person did to that building.
Questions about a document are usually about one such sentence, so :func:`proximity` adds, for the best
window of :data:`WINDOW` characters (about 25 words, a long sentence), the IDF of each distinct query term
inside it: the score of that window as if it were a tiny document. This is the classic BM25 + proximity
idea (e.g. Rasolofo and Savoy, 2003) in its simplest form, applied only to BM25's top candidates, so it
costs about a millisecond.

Matching uses a crude suffix stripper (:func:`term_key`), not FTS5's Porter stemmer: it only has to
recognize "painted"/"paint" or "votes"/"vote" inside a passage BM25 already found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Final

__all__ = ["WINDOW", "proximity", "term_key"]

WINDOW: Final = 160
_SUFFIXES: Final = ("ings", "ing", "edly", "ed", "ies", "s", "ly")


def term_key(word: str) -> str:
    """A rough stem: lowercased, one common suffix and a final 'e' removed, at most 6 letters."""
    w = word.lower()
    for suffix in _SUFFIXES:
        if len(w) > len(suffix) + 2 and w.endswith(suffix):
            w = w[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w[:6]


@lru_cache(maxsize=64)
def _candidates(prefixes: frozenset[str]) -> re.Pattern[str]:
    """Words that start like a query term: the regex engine skips the rest of the passage for us."""
    alternatives = "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True))
    return re.compile(rf"(?<![^\W_])(?:{alternatives})[^\W_]*", re.IGNORECASE)


def proximity(text: str, weights: Mapping[str, float], window: int = WINDOW) -> float:
    """The largest sum of ``weights`` (keyed by :func:`term_key`) of distinct terms within ``window`` characters."""
    if not weights:
        return 0.0
    pattern = _candidates(frozenset(key[:3] for key in weights))
    hits = [(m.start(), key) for m in pattern.finditer(text) if (key := term_key(m.group())) in weights]
    best, counts, total, left = 0.0, dict[str, int](), 0.0, 0
    for i, key in hits:  # two pointers over the matched positions
        counts[key] = counts.get(key, 0) + 1
        if counts[key] == 1:
            total += weights[key]
        while hits[left][0] <= i - window:
            old = hits[left][1]
            counts[old] -= 1
            if counts[old] == 0:
                total -= weights[old]
            left += 1
        best = max(best, total)
    return best
