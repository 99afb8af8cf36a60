"""emblemkb (OVEN/InfoSeek-like, tasks 6 and 8): knowledge-intensive questions about pictured entities.

Every fictional entity has a unique emblem and a passage of facts. A query shows the emblem in a
scene (small, off-centre, among other shapes) and asks about a fact without naming the entity;
every passage holds the same kinds of facts, so the question alone matches them all. The passage
never describes the emblem. Part of the evaluation queries are about entities that no training
query shows ("unseen"), so a retriever cannot just memorise emblems: naming the entity, what a
VLM does, is what makes them findable. Task 6 retrieves the passage (text); task 8 retrieves the
entity's card (the centred emblem + a one-sentence summary).
"""

from __future__ import annotations

import random
from dataclasses import replace

from rare.benchmark.builder import Builder
from rare.benchmark.scene import Mark, Scene, sample_objects
from rare.benchmark.spec import BuildContext, DatasetSpec
from rare.benchmark.vocab import CELLS
from rare.benchmark.world import FACT_KEYS, Entity, deictic_question, make_entities, passage, summary
from rare.mbeir import Dataset, Probe


def photo(rng: random.Random, e: Entity) -> Scene:
    """The entity's emblem as seen in a scene: small, in a random cell, with 1-2 unrelated shapes."""
    cells = list(CELLS)
    rng.shuffle(cells)
    clutter = tuple(replace(o, size="small") for o in sample_objects(rng, rng.randint(1, 2), cells[1:]))
    background = rng.choice(("white", "cream", "pale blue", "pale gray"))
    return Scene(clutter, (), background, Mark(e.name, e.category, e.emblem, cells[0], "small"))


def card(e: Entity) -> Scene:
    return Scene(mark=Mark(e.name, e.category, e.emblem))


def build(b: Builder, ctx: BuildContext) -> None:
    sz, rng, namer, unseen_fraction = b.sizes, b.rng, ctx.namer, ctx.unseen_entities
    n_eval = sz.test + sz.val
    n_unseen_q = round(unseen_fraction * n_eval)
    # Seen entities carry ~2 training queries per task; unseen ones only ever appear in val/test.
    n_seen = max(1, (sz.train + 1) // 2)
    n_unseen = max(n_unseen_q, sz.pool - n_seen)
    entities = make_entities(rng, namer, n_seen + n_unseen, emblems=set())
    passages = [b.candidate(passage(rng, e), None, entity=e.name) for e in entities]
    cards = [b.candidate(summary(e), card(e), entity=e.name) for e in entities]
    b.pool(6, passages)
    b.pool(8, cards)

    for task, pool in ((6, passages), (8, cards)):
        # evaluation: the unseen share first (distinct entities while they last), then seen entities
        unseen_ids = rng.sample(range(n_seen, len(entities)), n_unseen)
        picks = [unseen_ids[k % len(unseen_ids)] for k in range(n_unseen_q)]
        picks += [rng.randrange(n_seen) for _ in range(n_eval - n_unseen_q)]
        rng.shuffle(picks)
        splits = b.eval_splits() + ["train"] * sz.train
        picks += [k % n_seen for k in range(sz.train)]
        for split, i in zip(splits, picks):
            e = entities[i]
            key = rng.choice(FACT_KEYS)
            b.query(split, task, deictic_question(rng, e, key), photo(rng, e), [pool[i]],
                    question_about=key, answer=e.fact(key), entity_seen=i < n_seen)


SPEC = DatasetSpec(
    Dataset("emblemkb", 13, Probe.KNOWLEDGE),
    tsv_name="EmblemKB",
    instructions={
        6: (
            "Retrieve the encyclopedia passage about the organisation pictured that answers the question.",
            "Find the article about the pictured emblem's owner that answers this question.",
            "Identify the organisation shown and retrieve the passage with the answer.",
            "Find the wiki passage that answers this question about the pictured organisation.",
        ),
        8: (
            "Find the emblem card of the organisation pictured that answers the question.",
            "Retrieve the image and summary of the organisation shown that answer this question.",
            "Identify the organisation shown and retrieve its emblem card.",
            "Find the captioned emblem of the pictured organisation that answers the question.",
        ),
    },
    build=build,
)
