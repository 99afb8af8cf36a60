"""factwiki (WebQA-like, tasks 1 and 2): questions that name their subject; the text-side controls.

Task 1 asks about one fact of a named entity; its three passages all name it, and the question's
wording picks the one that holds the answer. Task 2 asks about what an entity's picture shows;
the picture card's caption names the entity, so the text already finds it and a description of
the image adds little. Enhancement has nothing to do on task 1 (text only), by design.
"""

from __future__ import annotations

import math

from rare.benchmark.builder import Builder
from rare.benchmark.scene import sample_scene
from rare.benchmark.spec import BuildContext, DatasetSpec
from rare.benchmark.world import ASPECTS, Entity, aspect_passage, make_entities, named_question
from rare.mbeir import Dataset, Probe

_CARD_CAPTIONS = ("The {name} hall in {city}.", "Banner of the {name}, {city}.", "{name}, {city}: the main sign.")
_VISUAL_QUESTIONS = ("What is painted on the banner of the {name}?", "What shapes are on the sign of the {name}?",
                     "What colours does the banner of the {name} use?", "What does the sign of the {name} show?")


def build(b: Builder, ctx: BuildContext) -> None:
    sz, rng, namer = b.sizes, b.rng, ctx.namer

    # task 1: named question -> the one passage (of three per entity) that answers it
    n_ent = max(math.ceil(sz.pool / len(ASPECTS)), math.ceil((sz.test + sz.val + sz.train) / len(ASPECTS)))
    entities = make_entities(rng, namer, n_ent, share_name=3)
    passages: dict[tuple[int, str], dict] = {}
    for i, e in enumerate(entities):
        for aspect in ASPECTS:
            passages[(i, aspect)] = b.candidate(aspect_passage(rng, e, aspect), None, entity=e.name, aspect=aspect)
    b.pool(1, list(passages.values()))
    pairs = list(passages)
    rng.shuffle(pairs)
    for split, (i, aspect) in zip(b.eval_splits() + ["train"] * sz.train, pairs):
        b.query(split, 1, named_question(rng, entities[i], aspect), None, [passages[(i, aspect)]],
                entity=entities[i].name, aspect=aspect)

    # task 2: question about a named entity's picture -> its picture card (image + caption)
    n_cards = max(sz.pool, sz.test + sz.val + sz.train)
    cards_of = make_entities(rng, namer, n_cards, share_name=3)
    cards = [_card(b, e) for e in cards_of]
    b.pool(2, cards)
    order = list(range(n_cards))
    rng.shuffle(order)
    for split, i in zip(b.eval_splits() + ["train"] * sz.train, order):
        e = cards_of[i]
        b.query(split, 2, rng.choice(_VISUAL_QUESTIONS).format(name=e.name), None, [cards[i]], entity=e.name)


def _card(b: Builder, e: Entity) -> dict:
    scene = sample_scene(b.rng, word_p=0.6)
    return b.candidate(b.rng.choice(_CARD_CAPTIONS).format(name=e.name, city=e.city), scene, entity=e.name)


SPEC = DatasetSpec(
    Dataset("factwiki", 11, Probe.PLAIN),
    tsv_name="FactWiki",
    instructions={
        1: (
            "Retrieve the passage that answers this question.",
            "Find a paragraph containing the answer.",
            "Locate the encyclopedia passage that answers the question.",
            "Find the text that holds the answer to this question.",
        ),
        2: (
            "Find the picture and caption that answer this question.",
            "Retrieve the image card that shows the answer.",
            "Identify the captioned picture this question is about.",
            "Find an image with a caption that answers the question.",
        ),
    },
    build=build,
)
