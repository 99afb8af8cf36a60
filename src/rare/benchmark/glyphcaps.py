"""glyphcaps (MSCOCO-like, tasks 0 and 3): shape scenes and the short captions written for them.

A caption names each object's colour and shape and leaves everything else out (sizes, places,
rendered words, background), as real captions do. Within a pool no two captions are equal, so
the caption identifies its image, but only through what the pixels show.
"""

from __future__ import annotations

import random
from collections import Counter

from rare.benchmark.builder import Builder
from rare.benchmark.scene import Scene, sample_scene
from rare.benchmark.spec import BuildContext, DatasetSpec
from rare.mbeir import Dataset, Probe

_NUMBERS = {2: "two", 3: "three"}
_TEMPLATES = ("A picture of {list}.", "{List}.", "There is {list}.", "An image with {list}.", "{List} in the picture.")


def _key(scene: Scene) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(Counter(o.label for o in scene.objects).items()))


def short_caption(rng: random.Random, scene: Scene) -> str:
    """"A red circle and two blue stars." in a random order and template."""
    items = list(Counter(o.label for o in scene.objects).items())
    rng.shuffle(items)
    phrases = [f"a {label}" if n == 1 else f"{_NUMBERS[n]} {label}s" for label, n in items]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    text = rng.choice(_TEMPLATES).format(list=listed, List=listed[0].upper() + listed[1:])
    return text


def _scenes(rng: random.Random, n: int, taken: set | None = None) -> list[Scene]:
    """``n`` scenes whose captions are pairwise different (and different from ``taken``)."""
    seen = set() if taken is None else taken
    out: list[Scene] = []
    while len(out) < n:
        scene = sample_scene(rng)
        if _key(scene) not in seen:
            seen.add(_key(scene))
            out.append(scene)
    return out


def build(b: Builder, _: BuildContext) -> None:
    sz, rng = b.sizes, b.rng
    n_pool = max(sz.pool, sz.test + sz.val)

    # task 0: caption -> image
    scenes = _scenes(rng, n_pool)
    images = [b.candidate(None, s, role="image") for s in scenes]
    b.pool(0, images)
    for split, i in zip(b.eval_splits(), rng.sample(range(n_pool), sz.test + sz.val)):
        b.query(split, 0, short_caption(rng, scenes[i]), None, [images[i]], role="caption")
    for s in _scenes(rng, sz.train):
        b.query("train", 0, short_caption(rng, s), None, [b.candidate(None, s, role="image")], role="caption")

    # task 3: image -> caption
    scenes = _scenes(rng, n_pool)
    captions = [b.candidate(short_caption(rng, s), None, role="caption") for s in scenes]
    b.pool(3, captions)
    for split, i in zip(b.eval_splits(), rng.sample(range(n_pool), sz.test + sz.val)):
        b.query(split, 3, None, scenes[i], [captions[i]], role="image")
    for s in _scenes(rng, sz.train):
        caption = b.candidate(short_caption(rng, s), None, role="caption")
        b.query("train", 3, None, s, [caption], role="image")


SPEC = DatasetSpec(
    Dataset("glyphcaps", 10, Probe.PLAIN),
    tsv_name="GlyphCaps",
    instructions={
        0: (
            "Find the image that matches this caption.",
            "Retrieve a picture of the shapes described.",
            "Identify the image showing the described scene.",
            "Show me an image that fits this caption.",
        ),
        3: (
            "Find a caption for the shapes in this image.",
            "Retrieve the short description of this picture.",
            "Identify the caption written for this image.",
            "Find text that describes this scene.",
        ),
    },
    build=build,
)
