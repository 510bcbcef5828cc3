"""Generated report-like prose, for ``olmo3 bench docs`` and the retrieval tests.

Why generated and why like this: the bench and the tests need hundreds of pages that no one has to ship,
and a retrieval test is only worth something if the distractor text shares its vocabulary with the
questions. So every sentence comes from the same small world (a harbour town's records: people, roles,
places, works, years, sums), and any one name or noun recurs many times across the text; only a
combination of them identifies a sentence, as in a real archive.
"""

from __future__ import annotations

import random
from typing import Final


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _items(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split("|"))


__all__ = ["FIRST_NAMES", "PLACES", "ROLES", "SURNAMES", "THINGS", "paragraph", "prose", "sentence"]

FIRST_NAMES: Final = _words(
    "Anna Bram Clara Dirk Edda Frans Greta Hugo Ilse Jonas Katja Lars Mina Niels Olga Pieter Rosa Sven Tilde "
    "Ulrich Vera Willem Xenia Yannick Zofia Aldo Berit Cas Dora Emil Agnes Bruno Cecily Edwin Flora Gideon Hester "
    "Isaac Judith Konrad Lotte Magnus Nora Oskar Phoebe Rufus Selma Tobias Una Viktor"
)
SURNAMES: Final = _words(
    "Vandermeer Okafor Lindqvist Brandt Castellano Haugen Moreau Petrov Sato Whitcombe Ferreira Kowalski Nakamura "
    "Osei Delacroix Ambrose Halloran Ivanova Juarez Kettering Lombardi Mbeki Norgaard Pellegrini Quist Rasmussen "
    "Szabo Thorne Ueda Valdez Achterberg Blackwood Cardew Dunmore Eriksen Fairbairn Gallagher Hollis Ingram Jessop "
    "Kirkwood Lachance Merriweather Nightingale Oyelaran Pritchard Quennell Rowntree Sandoval Tremayne Underhill "
    "Villeneuve Wainwright Yardley Zeller Abernethy Beaumont Crowther Dalrymple Ellingham"
)
ROLES: Final = _items(
    "the harbour master | the town surveyor | the council treasurer | the lighthouse keeper | the chief engineer | "
    "the archivist | the ferry captain | the customs officer | the parish clerk | the mill owner | "
    "the schoolmistress | the dock foreman | the borough architect | the medical officer | the pilot | "
    "the coroner | the station master | the rector | the magistrate | the coal merchant | the sexton | "
    "the postmistress | the shipwright | the water bailiff"
)
PLACES: Final = _items(
    "Port Ellery | the north quay | Halvard Bridge | the salt marshes | Kestrel Point | the old tannery district | "
    "the upper reservoir | Mill Lane | the eastern breakwater | St. Aldric's church | the fish market | "
    "the railway sidings | Gallows Hill | the west strand | Cobbler's Row | the Ropery Steps | Marram Dunes | "
    "the cattle fields | Windle Creek | the Common | Saltash Road | Abbey Green | the glassworks yard | "
    "the lower basin | Heron Island | the brickfields | Quarry End | the Promenade | Lantern Street | Fennick Moor"
)
THINGS: Final = _items(
    "the tide gauge | the grain warehouse | the pumping station | the signal lamp | the dredging barge | "
    "the coal staithes | the sea wall | the stone aqueduct | the customs house | the swing bridge | "
    "the lifeboat slipway | the ice house | the rope walk | the weather station | the gas works | "
    "the corn exchange | the dry dock | the net loft | the smokehouse | the bell tower | the sluice gate | "
    "the lime kiln | the brewery chimney | the tram depot | the water tower | the boat shed | the fog horn | "
    "the salt store | the timber yard | the cooperage | the town clock | the sailors' chapel | "
    "the fever hospital | the workhouse laundry | the harbour crane | the toll house | the bandstand | "
    "the drill hall | the public baths | the cattle market | the packet pier | the pilot station"
)
_VERBS: Final = _words(
    "inspected repaired surveyed measured rebuilt painted reinforced catalogued photographed widened closed "
    "reopened demolished extended insured valued restored drained"
)
_ADJECTIVES: Final = (
    "unsafe",
    "overcrowded",
    "badly flooded",
    "in fair condition",
    "too narrow",
    "well maintained",
    "structurally sound",
    "half finished",
    "overdue for repair",
    "poorly lit",
)
_EVENTS: Final = ("storm", "flood", "fire", "strike", "cold winter", "dry summer", "epidemic", "election")
_MATERIALS: Final = ("granite", "timber", "iron plate", "brick", "lime mortar", "copper wire", "tar", "gravel")
_UNITS: Final = ("tonnes", "cartloads", "barrels", "yards", "crates")
_CONNECTORS: Final = (
    "However,",
    "In the following year,",
    "According to the minutes,",
    "By contrast,",
    "As a result,",
    "Some time later,",
    "Meanwhile,",
    "Not long after,",
)
_TEMPLATES: Final = (
    "In {year}, {person}, {role}, {verb} {thing} near {place}.",
    "{connector} the council voted to spend {money} on {thing} at {place}.",
    "The records show that {thing} at {place} was {adj} after the {event} of {year}.",
    "{person} later wrote that {thing} was {adj} and that {place} needed {amount} of {material}.",
    "A report from {year} describes {thing} as {adj}, although {role} disagreed.",
    "{connector} {role} {verb} {thing} twice before the {event} reached {place}.",
    "During the {event} of {year}, {amount} of {material} were carried from {place} to {thing}.",
    "{person} was appointed {role_bare} in {year} and {verb} {thing} within a month.",
    "Letters kept by {role} mention {person} and the cost of {thing}, some {money} in all.",
    "{connector} the work on {thing} stopped when the {event} closed {place}.",
    "Visitors to {place} in {year} found {thing} {adj}, as {person} had warned.",
    "The minutes of {year} note that {role} asked for {amount} of {material} for {thing}.",
    "It was {person} who first suggested that {thing} be moved away from {place}.",
    "No drawings of {thing} survive from before {year}, when {role} {verb} it.",
    "{connector} {person} complained to {role} that {thing} was {adj}.",
    "A photograph taken near {place} in {year} shows {thing} {adj}.",
    "The accounts for {year} list {money} spent on {material} for {thing} and {other_thing}.",
    "{person} kept a diary in which {thing}, {other_thing} and {place} are mentioned almost daily.",
    "When the {event} of {year} struck, {role} ordered {thing} to be {verb}.",
    "Tenders to supply {amount} of {material} for {thing} were invited in {year}.",
)


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"


def sentence(rng: random.Random) -> str:
    """One sentence of the harbour town's records."""
    template = rng.choice(_TEMPLATES)
    role = rng.choice(ROLES)
    text = template.format(
        year=rng.randint(1850, 1990),
        person=_person(rng),
        role=role,
        role_bare=role.removeprefix("the "),
        verb=rng.choice(_VERBS),
        thing=rng.choice(THINGS),
        other_thing=rng.choice(THINGS),
        place=rng.choice(PLACES),
        connector=rng.choice(_CONNECTORS),
        money=f"{rng.randint(2, 900) * 10:,} pounds",
        adj=rng.choice(_ADJECTIVES),
        event=rng.choice(_EVENTS),
        amount=f"{rng.randint(3, 400)} {rng.choice(_UNITS)}",
        material=rng.choice(_MATERIALS),
    )
    return text[0].upper() + text[1:]


def paragraph(rng: random.Random, sentences: int = 5) -> str:
    """A paragraph of ``sentences`` sentences."""
    return " ".join(sentence(rng) for _ in range(sentences))


def prose(rng: random.Random, paragraphs: int, sentences: int = 5) -> str:
    """``paragraphs`` paragraphs separated by blank lines."""
    return "\n\n".join(paragraph(rng, sentences) for _ in range(paragraphs))
