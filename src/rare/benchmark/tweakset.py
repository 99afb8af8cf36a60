"""tweakset (CIRR/FashionIQ-like, task 7): reference image + verbose edit request -> edited image.

A family is a base scene of four objects (distinct shapes) with four independent edit slots
(recolour, add/remove, resize, reshape), one per object; its 16 members are every combination
of slots, all in the pool. A query picks a member as reference and asks, in chatty words, for
1-3 slot changes; the target is the member with exactly those changes. The other members are
the hard negatives: partial edits, over-edits, and the reference itself. The unchanged slots are
only in the reference's pixels, the changes only in the words.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any

from rare.benchmark.builder import Builder
from rare.benchmark.scene import Obj, Scene, jitter
from rare.benchmark.spec import BuildContext, DatasetSpec
from rare.benchmark.vocab import CELLS, SCENE_COLORS, SHAPES
from rare.mbeir import Dataset, Probe

SLOTS = 4
MEMBERS = 1 << SLOTS
ATTRIBUTES = ("color", "presence", "size", "shape")
TRAIN_PER_FAMILY = 4


@dataclass(frozen=True)
class Slot:
    attribute: str
    index: int  # the object it edits
    off: Any  # attribute value in state 0 (for presence: True = present)
    on: Any  # attribute value in state 1


@dataclass(frozen=True)
class TweakFamily:
    objects: tuple[Obj, ...]
    slots: tuple[Slot, ...]
    background: str

    def scene(self, member: int) -> Scene:
        objs: list[Obj | None] = list(self.objects)
        for bit, slot in enumerate(self.slots):
            value = slot.on if member >> bit & 1 else slot.off
            o = objs[slot.index]
            assert o is not None
            if slot.attribute == "presence":
                objs[slot.index] = o if value else None
            else:
                objs[slot.index] = replace(o, **{slot.attribute: value})
        return Scene(tuple(o for o in objs if o is not None), (), self.background)


def sample_family(rng: random.Random) -> TweakFamily:
    shapes = rng.sample(SHAPES, len(SHAPES))  # 4 for the objects, 2 spare for reshape slots
    cells = rng.sample(list(CELLS), SLOTS)
    colors = list(SCENE_COLORS)
    objs = tuple(Obj(shapes[i], rng.choice(colors), rng.choice(("small", "large")), cells[i], **jitter(rng, 1.5))
                 for i in range(SLOTS))
    attributes = list(ATTRIBUTES)
    rng.shuffle(attributes)
    spare = shapes[SLOTS:]
    slots = []
    for i, attribute in enumerate(attributes):
        o = objs[i]
        if attribute == "color":
            slots.append(Slot(attribute, i, o.color, rng.choice([c for c in colors if c != o.color])))
        elif attribute == "presence":
            slots.append(Slot(attribute, i, True, False) if rng.random() < 0.5 else Slot(attribute, i, False, True))
        elif attribute == "size":
            slots.append(Slot(attribute, i, o.size, "small" if o.size == "large" else "large"))
        else:
            slots.append(Slot(attribute, i, o.shape, spare[0]))
    background = rng.choices(("white", "cream", "pale blue", "pale gray"), weights=(4, 1, 1, 1))[0]
    return TweakFamily(objs, tuple(slots), background)


# -------------------------------------------------------------- instructions
_OPENERS = ("Please", "I would like you to", "Could you please", "Take this picture and", "Starting from this image,",
            "For this one, I want you to", "Using the image as a base, kindly", "Go ahead and")
_JOINERS = (", and then", " and also", ", plus", ", and on top of that", " and", ", after that")
_CLOSERS = (".", ", keeping everything else the same.", " while leaving the rest of the picture as it is.",
            ", but do not change anything else.", " and that is it.")
_CLAUSES = {
    "recolor": ("make the {shape} {to}", "change the colour of the {shape} to {to}", "paint the {shape} {to} instead",
                "have the {shape} turn {to}"),
    "remove": ("remove the {shape}", "get rid of the {shape}", "take the {shape} out of it",
               "make the {shape} disappear"),
    "add": ("add a {size} {color} {shape}", "put a {size} {color} {shape} in there",
            "include a {size} {color} {shape} somewhere"),
    "bigger": ("make the {shape} bigger", "enlarge the {shape}", "have the {shape} grow a bit larger"),
    "smaller": ("make the {shape} smaller", "shrink the {shape} down", "have the {shape} get a bit smaller"),
    "reshape": ("turn the {from_} into a {to}", "replace the {from_} with a {to}", "swap the {from_} for a {to}"),
}


def edit_of(family: TweakFamily, slot: Slot, to_on: bool) -> dict[str, Any]:
    """The atomic edit that moves ``slot`` to its on (or off) state, in the annotation's terms."""
    o = family.objects[slot.index]
    new, old = (slot.on, slot.off) if to_on else (slot.off, slot.on)
    if slot.attribute == "color":
        return {"op": "recolor", "shape": o.shape, "from": old, "to": new}
    if slot.attribute == "presence":
        if new:
            return {"op": "add", "shape": o.shape, "color": o.color, "size": o.size}
        return {"op": "remove", "shape": o.shape}
    if slot.attribute == "size":
        return {"op": "resize", "shape": o.shape, "from": old, "to": new}
    return {"op": "reshape", "from": old, "to": new, "color": o.color}


def clause(rng: random.Random, edit: dict[str, Any]) -> str:
    op = edit["op"]
    if op == "resize":
        op = "bigger" if edit["to"] == "large" else "smaller"
    fields = {k if k != "from" else "from_": v for k, v in edit.items() if k != "op"}
    return rng.choice(_CLAUSES[op]).format(**fields)


def instruction(rng: random.Random, edits: list[dict[str, Any]]) -> str:
    """A chatty request: opener, one clause per edit with filler joiners, a closer. Never a question."""
    text = f"{rng.choice(_OPENERS)} {clause(rng, edits[0])}"
    for e in edits[1:]:
        text += f"{rng.choice(_JOINERS)} {clause(rng, e)}"
    return text + rng.choice(_CLOSERS)


# ------------------------------------------------------------------- build
def _pairs(rng: random.Random, n: int) -> list[tuple[int, int]]:
    """``n`` distinct (reference, target) members differing in 1-3 slots."""
    out: list[tuple[int, int]] = []
    while len(out) < n:
        ref = rng.randrange(MEMBERS)
        k = rng.choices((1, 2, 3), weights=(35, 45, 20))[0]
        flip = sum(1 << b for b in rng.sample(range(SLOTS), k))
        if (ref, ref ^ flip) not in out:
            out.append((ref, ref ^ flip))
    return out


def _query(b: Builder, split: str, family: TweakFamily, ref: int, target: dict[str, Any], tgt: int) -> None:
    edits = [edit_of(family, s, bool(tgt >> bit & 1)) for bit, s in enumerate(family.slots) if (ref ^ tgt) >> bit & 1]
    b.query(split, 7, instruction(b.rng, edits), family.scene(ref), [target], edit=edits)


def build(b: Builder, _: BuildContext) -> None:
    sz, rng = b.sizes, b.rng
    n_eval = sz.test + sz.val
    n_fam = max(math.ceil(sz.pool / MEMBERS), math.ceil(n_eval / 6))
    families = [sample_family(rng) for _ in range(n_fam)]
    members = [[b.candidate(None, f.scene(m), member=m) for m in range(MEMBERS)] for f in families]
    b.pool(7, [c for fam in members for c in fam])
    jobs = [(f, pair) for f in range(n_fam) for pair in _pairs(rng, math.ceil(n_eval / n_fam))]
    rng.shuffle(jobs)
    for split, (f, (ref, tgt)) in zip(b.eval_splits(), jobs):
        _query(b, split, families[f], ref, members[f][tgt], tgt)
    # training families are separate; only their references and targets are ever drawn
    for start in range(0, sz.train, TRAIN_PER_FAMILY):
        family = sample_family(rng)
        targets: dict[int, dict[str, Any]] = {}
        for ref, tgt in _pairs(rng, min(TRAIN_PER_FAMILY, sz.train - start)):
            if tgt not in targets:
                targets[tgt] = b.candidate(None, family.scene(tgt), member=tgt)
            _query(b, "train", family, ref, targets[tgt], tgt)


SPEC = DatasetSpec(
    Dataset("tweakset", 14, Probe.COMPOSITIONAL, headline_k=10),
    tsv_name="TweakSet",
    instructions={
        7: (
            "Find the image after applying the requested change.",
            "Retrieve the modified picture described by the request.",
            "Show the edited version of this image.",
            "Find this image with the described modifications applied.",
        ),
    },
    build=build,
)
