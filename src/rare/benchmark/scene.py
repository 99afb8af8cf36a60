"""Scenes: what one image shows, exactly (for rendering) and in words (for its annotation).

A scene carries both the fine geometry the renderer needs (offsets, shades, rotation) and the
coarse facts a captioner would state (colour names, grid cells, relations). Only the coarse
facts go into the annotation, so two renders that differ only finely share one annotation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any

from rare.benchmark.vocab import (
    CELLS,
    EMBLEM_COLORS,
    EMBLEM_SHAPES,
    EMBLEM_SYMBOLS,
    SCENE_COLORS,
    SCHEMA,
    SHAPES,
    WORD_LETTERS,
    WORD_VOWELS,
)


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str  # "small" | "large"
    cell: str  # key of CELLS
    dx: float = 0.0  # fine offset from the cell centre, 64-unit canvas
    dy: float = 0.0
    rot: float = 0.0  # degrees
    shade: tuple[int, int, int] = (0, 0, 0)  # RGB delta that keeps the colour name
    scale: float = 1.0

    @property
    def label(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Word:
    text: str
    color: str
    cell: str


@dataclass(frozen=True)
class Emblem:
    shape: str
    color: str
    symbol: str
    symbol_color: str
    border: str | None = None

    def describe(self) -> str:
        out = f"{self.color} {self.shape} with {self.symbol_color} {self.symbol}"
        return f"{out}, {self.border} border" if self.border else out


@dataclass(frozen=True)
class Mark:
    """A fictional entity's emblem as it appears in an image."""

    name: str
    category: str
    emblem: Emblem
    cell: str = "center"
    size: str = "large"  # "large": the canonical, centred emblem; "small": the emblem seen in a scene


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...] = ()
    words: tuple[Word, ...] = ()
    background: str = "white"
    mark: Mark | None = None
    brightness: float = 1.0  # photometric change that no caption would mention
    shift: tuple[float, float] = (0.0, 0.0)  # global offset, 64-unit canvas

    def annotation(self) -> dict[str, Any]:
        """The coarse, caption-level truth about this image (what a perfect VLM could see)."""
        ann: dict[str, Any] = {
            "background": self.background,
            "objects": [{"shape": o.shape, "color": o.color, "size": o.size, "pos": o.cell} for o in self.objects],
            "words": [{"text": w.text, "color": w.color, "pos": w.cell} for w in self.words],
            "relations": relations(self.objects),
            "entity": None,
        }
        if self.mark is not None:
            m = self.mark
            e = m.emblem
            ann["entity"] = {"name": m.name, "category": m.category, "pos": m.cell, "size": m.size,
                             "emblem": {"shape": e.shape, "color": e.color, "symbol": e.symbol,
                                        "symbol_color": e.symbol_color, "border": e.border}}
        return ann


def annotation_json(dataset: str, image: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The src_content object of a record: schema tag, dataset, the image's annotation, then extras."""
    out: dict[str, Any] = {"schema": SCHEMA, "dataset": dataset}
    if image is not None:
        out["image"] = image
    out.update(extra)
    return out


def relations(objects: tuple[Obj, ...]) -> list[list[str]]:
    """Pairwise relations by grid cell: horizontal when the columns differ, else vertical."""
    out = []
    for a, b in combinations(objects, 2):
        if a.label == b.label:
            continue  # twins are stated as a count, not as a relation to themselves
        (ac, ar), (bc, br) = CELLS[a.cell], CELLS[b.cell]
        if ac != bc:
            left, right = (a, b) if ac < bc else (b, a)
            out.append([left.label, "left of", right.label])
        elif ar != br:
            top, bottom = (a, b) if ar < br else (b, a)
            out.append([top.label, "above", bottom.label])
    return out


# ---------------------------------------------------------------- sampling
def sample_word(rng: random.Random) -> str:
    letters = [rng.choice(WORD_LETTERS), rng.choice(WORD_VOWELS), rng.choice(WORD_LETTERS)]
    if rng.random() < 0.4:
        letters.append(rng.choice(WORD_VOWELS))
    return "".join(letters)


def jitter(rng: random.Random, amount: float = 2.0) -> dict[str, float]:
    return {"dx": round(rng.uniform(-amount, amount), 2), "dy": round(rng.uniform(-amount, amount), 2),
            "rot": round(rng.uniform(-8, 8), 1)}


def sample_objects(rng: random.Random, n: int, cells: list[str], distinct_shapes: bool = False,
                   allow_twins: bool = False) -> tuple[Obj, ...]:
    """``n`` objects in distinct cells; ``allow_twins`` may repeat an object (for counts: "two red stars")."""
    chosen = rng.sample(cells, n)
    shapes = rng.sample(SHAPES, n) if distinct_shapes else [rng.choice(SHAPES) for _ in range(n)]
    objs: list[Obj] = []
    for i, cell in enumerate(chosen):
        if allow_twins and objs and rng.random() < 0.25:
            twin = objs[-1]
            objs.append(Obj(twin.shape, twin.color, twin.size, cell, **jitter(rng)))
            continue
        objs.append(Obj(shapes[i], rng.choice(tuple(SCENE_COLORS)), rng.choice(("small", "large")), cell, **jitter(rng)))
    return tuple(objs)


def sample_scene(rng: random.Random, max_objects: int = 3, word_p: float = 0.5, distinct_shapes: bool = False,
                 allow_twins: bool = True) -> Scene:
    """1-``max_objects`` objects, maybe a rendered word, on one of the pale backgrounds."""
    n = rng.randint(1, max_objects)
    cells = list(CELLS)
    rng.shuffle(cells)
    objects = sample_objects(rng, n, cells[:-1], distinct_shapes, allow_twins)
    words: tuple[Word, ...] = ()
    free = [c for c in cells if c not in {o.cell for o in objects}]
    if rng.random() < word_p and free:
        words = (Word(sample_word(rng), rng.choice(("black", "red", "blue", "green", "purple")), rng.choice(free)),)
    background = rng.choices(("white", "cream", "pale blue", "pale gray"), weights=(4, 1, 1, 1))[0]
    return Scene(objects, words, background)


def sample_emblem(rng: random.Random) -> Emblem:
    colors = tuple(EMBLEM_COLORS)
    color = rng.choice(colors)
    symbol_color = rng.choice([c for c in colors if c != color])
    border = rng.choice((None, *[c for c in colors if c not in (color, symbol_color)]))
    return Emblem(rng.choice(EMBLEM_SHAPES), color, rng.choice(EMBLEM_SYMBOLS), symbol_color, border)


def with_object(scene: Scene, index: int, **changes: Any) -> Scene:
    objs = list(scene.objects)
    objs[index] = replace(objs[index], **changes)
    return replace(scene, objects=tuple(objs))
