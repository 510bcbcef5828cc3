"""Child process for tests/store/test_store_crash.py: writes a conversation and streams until killed.

Usage: python tests/store/_store_child.py DB [LOG [SEED]]

Each run adds to the store's single conversation: a user message, a short assistant reply
streamed to completion, a follow-up, and then a long streamed reply (reasoning, then answer)
that is normally cut short by SIGKILL. Every step is appended to LOG as one JSON line *after*
the store call returned, so the parent knows what must be on disk:

* ``{"ev": "complete", "id", "content", "reasoning", "token_ids", "stats"}``: a finished message;
* ``{"ev": "begin", "id", "seed"}``: the long stream's message id;
* ``{"ev": "d", "i", "tb"}``: delta ``i`` of :func:`deltas` was appended; ``tb`` is
  ``time.monotonic()`` taken just *before* the ``stream_append`` call.

The deltas are generated from SEED, so the parent can rebuild the exact text without the child
writing it out.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

WORDS = [
    "the",
    "quick",
    "café",
    "naïve",
    "日本語",
    "🙂",
    "<script>",
    "&amp;",
    "`code`",
    "\n",
    '"quoted"',
    "Zürich",
    "δ",
    "pneumonoultramicroscopic",
    "\\",
    "it's",
]
REASONING_DELTAS = 40
TOTAL_DELTAS = 3000
DELTA_SLEEP_S = 0.004


def deltas(seed: int) -> list[tuple[str, str]]:
    """The (channel, text) sequence of the long stream for this seed."""
    rng = random.Random(seed)
    out = []
    for i in range(TOTAL_DELTAS):
        channel = "reasoning" if i < REASONING_DELTAS else "answer"
        out.append((channel, "".join(rng.choice(WORDS) + " " for _ in range(rng.randint(1, 3)))))
    return out


def main(argv: list[str]) -> None:
    db = argv[1]
    log = argv[2] if len(argv) > 2 else db + ".log"
    seed = int(argv[3]) if len(argv) > 3 else 0
    from olmo3.store import ConversationStore

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def record(**fields: object) -> None:
        os.write(fd, (json.dumps(fields, ensure_ascii=False) + "\n").encode())

    store = ConversationStore(db)
    convs = store.list_conversations()
    conv = convs[0].id if convs else store.create_conversation(model_id="tiny", title="Crash test")
    leaf = store.active_leaf(conv)

    question = f"Question {seed}: tell me everything about café culture."
    user = store.append_message(conv, leaf.id if leaf else None, "user", question)
    record(ev="complete", id=user, content=question, reasoning="", token_ids=None, stats=None)

    short = store.begin_stream(conv, user, provenance={"seed": seed})
    parts = [f"Short answer {seed}, ", "part two, ", "and the end."]
    for part in parts:
        store.stream_append(short, part)
    stats = {"tokens": 3, "tok_s": 12.5}
    store.finish_stream(short, token_ids=[seed, 1, 2], stats=stats)
    record(ev="complete", id=short, content="".join(parts), reasoning="", token_ids=[seed, 1, 2], stats=stats)

    follow = f"Follow-up {seed} <script>alert(1)</script>"
    user2 = store.append_message(conv, short, "user", follow)
    record(ev="complete", id=user2, content=follow, reasoning="", token_ids=None, stats=None)

    long = store.begin_stream(conv, user2, provenance={"seed": seed})
    record(ev="begin", id=long, seed=seed)
    sequence = deltas(seed)
    for i, (channel, text) in enumerate(sequence):
        tb = time.monotonic()
        store.stream_append(long, text, channel)  # type: ignore[arg-type]
        record(ev="d", i=i, tb=tb)
        time.sleep(DELTA_SLEEP_S)
    store.finish_stream(long, token_ids=list(range(len(sequence))), stats={"tokens": len(sequence)})
    record(
        ev="complete",
        id=long,
        content="".join(t for c, t in sequence if c == "answer"),
        reasoning="".join(t for c, t in sequence if c == "reasoning"),
        token_ids=list(range(len(sequence))),
        stats={"tokens": len(sequence)},
    )
    store.close()


if __name__ == "__main__":
    main(sys.argv)
