"""Retrieval quality: 20 planted facts in a long generated PDF, 20 questions, the planted passage in the top 3.

The distractor text is not trivially separable from the facts. It is archive prose from the same small world
(every surname and every structure in a question recurs dozens of times), and each planted fact has three
decoys elsewhere that share two of its three parts: the same kind of fact about the same structure by
someone else, the same kind of fact by the same person about another structure, and another sentence
about the same person and structure. Only the planted passage has all three. The questions paraphrase.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass

from olmo3.docs import index
from olmo3.docs.chunk import chunk
from olmo3.docs.extract import extract
from olmo3.docs.minipdf import wrap, write_pdf
from olmo3.docs.synth import FIRST_NAMES, PLACES, ROLES, SURNAMES, THINGS, paragraph

# (fact, question): the fact is planted, the question asks about it in other words.
FACTS = (
    (
        "{person}, {role}, recorded that {thing} sank {n} inches into the silt during the flood of {year}.",
        "How many inches did {thing} sink into the silt, according to {surname}?",
    ),
    (
        "The council paid {person} {n} pounds to paint {thing} a pale green colour in {year}.",
        "What colour did {surname} paint {thing}?",
    ),
    (
        "In {year}, {person} counted {n} cormorants nesting on {thing} near {place}.",
        "How many cormorants did {surname} count nesting on {thing}?",
    ),
    (
        "{person} proposed moving {thing} to {place}, but the proposal was defeated by {n} votes in {year}.",
        "By how many votes was {surname}'s proposal to move {thing} defeated?",
    ),
    (
        "A brass plaque unveiled by {person} in {year} marks the spot where {thing} was first built.",
        "When did {surname} unveil the brass plaque for {thing}?",
    ),
)
DECOY = "{person} also spoke about {thing} at a meeting held near {place}."


@dataclass
class Planted:
    sentence: str
    question: str


def fill(template: str, rng: random.Random, surname: str, thing: str) -> str:
    text = template.format(
        person=f"{rng.choice(FIRST_NAMES)} {surname}",
        surname=surname,
        role=rng.choice(ROLES),
        thing=thing,
        place=rng.choice(PLACES),
        n=rng.randint(2, 900),
        year=rng.randint(1850, 1990),
    )
    return text[0].upper() + text[1:]


def build(rng: random.Random, pages: int = 120) -> tuple[list[list[str]], list[Planted]]:
    """Pages of paragraphs with 20 facts and 60 decoys planted at random places."""
    pairs = rng.sample([(s, t) for s in SURNAMES for t in THINGS], 20)
    planted: list[Planted] = []
    extra: list[str] = []
    for i, (surname, thing) in enumerate(pairs):
        fact, question = FACTS[i % len(FACTS)]
        planted.append(Planted(fill(fact, rng, surname, thing), fill(question, rng, surname, thing)))
        other_surname = rng.choice([s for s in SURNAMES if s != surname])
        other_thing = rng.choice([t for t in THINGS if t != thing])
        extra += [fill(fact, rng, other_surname, thing), fill(fact, rng, surname, other_thing)]
        extra.append(fill(DECOY, rng, surname, thing))
    doc = [[paragraph(rng, 5) for _ in range(6)] for _ in range(pages)]
    for sentence in [p.sentence for p in planted] + extra:
        para = rng.choice(doc)
        i = rng.randrange(len(para))
        sentences = para[i].split(". ")
        sentences.insert(rng.randrange(len(sentences) + 1), sentence.rstrip("."))
        para[i] = ". ".join(s.rstrip(".") for s in sentences) + "."
    return doc, planted


def norm(text: str) -> str:
    return " ".join(text.split())


def test_planted_passages_rank_in_the_top_three(tmp_path):
    rng = random.Random(7)
    pages, planted = build(rng)
    pdf = write_pdf(tmp_path / "archive.pdf", [wrap("\n\n".join(page)) for page in pages])
    doc = extract(pdf)
    passages = chunk(doc)
    conn = sqlite3.connect(tmp_path / "docs.sqlite3")
    index.ensure_schema(conn)
    index.add_document(conn, "conv", doc, passages)
    assert len(passages) > 100  # a long document: retrieval, not "whole", is what it would get

    in_top3 = 0
    report = []
    for p in planted:
        target = {x.ordinal for x in passages if norm(p.sentence) in norm(x.text)}
        assert target, f"planted sentence lost in chunking: {p.sentence}"
        hits = index.search(conn, "conv", p.question, 3)
        ok = any(h.ordinal in target for h in hits)
        in_top3 += ok
        report.append(f"{'ok ' if ok else 'MISS'} {p.question}")
    print("\n".join(report))
    assert in_top3 >= 18, "\n".join(report)
