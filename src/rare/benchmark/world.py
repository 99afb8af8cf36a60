"""Fictional entities with facts, wiki-style passages and questions about them.

Every entity has the same kinds of facts, so a question that does not name its entity matches
every passage equally: only knowing which entity is pictured (what a VLM adds) finds the one
passage. Names are invented, so no pretrained text encoder knows them either.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rare.benchmark.scene import Emblem, sample_emblem
from rare.benchmark.vocab import CATEGORIES, CODAS, CRAFTS, FIRST_NAMES, ONSETS, VOWELS


@dataclass(frozen=True)
class Entity:
    name: str  # "Veltrano Guild"
    category: str  # "guild"
    year: int
    founder: str
    city: str
    members: int
    leader: str
    craft: str
    emblem: Emblem

    def fact(self, key: str) -> str:
        return {"year": str(self.year), "founder": self.founder, "city": self.city,
                "members": str(self.members), "leader": self.leader, "craft": self.craft}[key]


FACT_KEYS = ("year", "founder", "city", "members", "leader", "craft")


class Namer:
    """Unique invented words; one instance per benchmark so no two entities or places collide."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: tuple[int, int] = (2, 3)) -> str:
        while True:
            n = self.rng.randint(*syllables)
            w = "".join(self.rng.choice(ONSETS) + self.rng.choice(VOWELS) for _ in range(n)) + self.rng.choice(CODAS)
            w = w.capitalize()
            if w not in self.used:
                self.used.add(w)
                return w

    def person(self) -> str:
        return f"{self.rng.choice(FIRST_NAMES)} {self.word((2, 2))}"


def make_entities(rng: random.Random, namer: Namer, n: int, emblems: set[Emblem] | None = None,
                  share_name: int = 1) -> list[Entity]:
    """``n`` entities; with ``emblems`` given, each gets an emblem no other entity has. With
    ``share_name`` > 1, runs of that many entities share a proper name ("Buri Order", "Buri Guild"),
    so the category word matters as much as the name."""
    out = []
    categories: list[str] = []
    for i in range(n):
        emblem = sample_emblem(rng)
        if emblems is not None:
            while emblem in emblems:
                emblem = sample_emblem(rng)
            emblems.add(emblem)
        if i % share_name == 0:
            proper = namer.word()
            categories = rng.sample(CATEGORIES, share_name)
        category = categories[i % share_name]
        out.append(Entity(
            name=f"{proper} {category.capitalize()}", category=category, year=rng.randint(1150, 1950),
            founder=namer.person(), city=namer.word((2, 2)), members=rng.randint(12, 4000),
            leader=namer.person(), craft=rng.choice(CRAFTS), emblem=emblem,
        ))
    return out


# ----------------------------------------------------------------- passages
_SENTENCES = {
    "intro": ("The {name} is a {category} based in {city}.", "The {name} is a {category} in the town of {city}.",
              "Based in {city}, the {name} is a {category}."),
    "year": ("It was founded in {year} by {founder}.", "{founder} founded it in {year}.",
             "Its history begins in {year}, when {founder} founded it."),
    "members": ("Today it has {members} members and is led by {leader}.",
                "It counts {members} members; its current head is {leader}.",
                "{leader} leads its {members} members."),
    "craft": ("It is known for {craft}.", "It is best known for its {craft}.",
              "Visitors come for its {craft}."),
}


def _fill(rng: random.Random, key: str, e: Entity) -> str:
    return rng.choice(_SENTENCES[key]).format(**e.__dict__)


def passage(rng: random.Random, e: Entity) -> str:
    """A wiki-style paragraph with every fact; it never describes the emblem (that is only in pixels)."""
    body = [_fill(rng, k, e) for k in ("year", "members", "craft")]
    rng.shuffle(body)
    return " ".join([_fill(rng, "intro", e), *body])


def summary(e: Entity) -> str:
    """The short text of an entity's image card: every fact in one sentence."""
    return (f"{e.name}: {e.category} in {e.city}, founded in {e.year} by {e.founder}, "
            f"{e.members} members led by {e.leader}, known for {e.craft}.")


_ASPECTS = {
    "history": ("The {name} was founded in {year} by {founder}.", "{founder} founded the {name} in {year}.",
                "The history of the {name} begins in {year}, when {founder} founded it."),
    "place": ("The {name} is a {category} based in {city}. It is known for {craft}.",
              "Based in {city}, the {name} is a {category} best known for its {craft}."),
    "people": ("The {name} has {members} members and is led by {leader}.",
               "{leader} heads the {name}, which counts {members} members."),
}
ASPECTS = tuple(_ASPECTS)


def aspect_passage(rng: random.Random, e: Entity, aspect: str) -> str:
    """One of an entity's three passages (history, place, people); a question picks one of them."""
    return rng.choice(_ASPECTS[aspect]).format(**e.__dict__)


# ---------------------------------------------------------------- questions
# "{this}" is the deictic reference to the pictured entity: "this guild" or just "this".
DEICTIC_QUESTIONS = {
    "year": ("In which year was {this} founded?", "When was {this} founded?", "What year was {this} established in?"),
    "founder": ("Who founded {this}?", "Who established {this}?", "Which person started {this}?"),
    "city": ("In which city is {this} based?", "Where is {this} located?", "Which town is {this} in?"),
    "members": ("How many members does {this} have?", "How many people belong to {this}?"),
    "leader": ("Who leads {this} today?", "Who is the current head of {this}?"),
    "craft": ("What is {this} known for?", "What is {this} famous for?"),
}
# Questions that name their entity (text-side control): aspect -> templates
NAMED_QUESTIONS = {
    "history": ("Who founded the {name}?", "When was the {name} founded?", "Who started the {name}?",
                "How old is the {name}?", "When did the {name} come into being?"),
    "place": ("Where is the {name} based?", "What is the {name} known for?", "Which town is home to the {name}?",
              "What does the {name} make?", "Where would one visit the {name}?"),
    "people": ("How many members does the {name} have?", "Who is the head of the {name}?", "Who runs the {name} now?",
               "How big is the {name}?", "How many people belong to the {name}?"),
}


def deictic_question(rng: random.Random, e: Entity, key: str) -> str:
    this = rng.choice((f"this {e.category}", f"this {e.category}", "this"))
    return rng.choice(DEICTIC_QUESTIONS[key]).format(this=this)


def named_question(rng: random.Random, e: Entity, aspect: str) -> str:
    return rng.choice(NAMED_QUESTIONS[aspect]).format(name=e.name)
