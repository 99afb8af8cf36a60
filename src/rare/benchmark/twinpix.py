"""twinpix (NIGHTS-like, task 4): find the near-duplicate of a scene among look-alikes.

Each reference has one positive (the same scene, re-rendered with tiny jitter and a brightness
change) and seven hard negatives that each change ONE attribute: an object moved within its
cell (x2), its shade changed within its colour name (x2), its size scaled within its size class
(x2), or its colour name changed (x1). Only the last shows in a caption, so captions narrow the
pool to seven look-alikes, more than R@5 can hold: the pixels decide. Every candidate gets its
own brightness, so brightness is never the cue.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

from rare.benchmark.builder import Builder
from rare.benchmark.scene import Scene, sample_scene, with_object
from rare.benchmark.spec import BuildContext, DatasetSpec
from rare.benchmark.vocab import SCENE_COLORS
from rare.mbeir import Dataset, Probe

# the positive first, then the hard negatives
VARIANTS = ("jitter", "moved", "moved", "shaded", "shaded", "scaled", "scaled", "recolored")
GROUP = len(VARIANTS)


def _nearest(rgb: tuple[int, ...]) -> str:
    return min(SCENE_COLORS, key=lambda n: sum((a - b) ** 2 for a, b in zip(SCENE_COLORS[n], rgb)))


def _photometric(rng: random.Random, scene: Scene) -> Scene:
    return replace(scene, brightness=round(rng.uniform(0.94, 1.06), 3),
                   shift=(round(rng.uniform(-1, 1), 2), round(rng.uniform(-1, 1), 2)))


def _shade(rng: random.Random, color: str) -> tuple[int, int, int]:
    """A clearly different shade that a captioner would still call ``color``."""
    base = SCENE_COLORS[color]
    for _ in range(100):
        delta = tuple(rng.choice((-1, 1)) * rng.randint(30, 60) for _ in range(3))
        shaded = tuple(max(0, min(255, c + d)) for c, d in zip(base, delta))
        if _nearest(shaded) == color and sum(abs(s - c) for s, c in zip(shaded, base)) >= 60:
            return tuple(s - c for s, c in zip(shaded, base))  # type: ignore[return-value]
    return (0, 0, 0)


def group(rng: random.Random) -> tuple[Scene, list[Scene]]:
    """(reference, candidates): the positive first, then one hard negative per VARIANTS entry."""
    ref = sample_scene(rng, max_objects=3, word_p=0.3, allow_twins=False)
    n = len(ref.objects)
    out = [ref]
    for variant in VARIANTS[1:]:
        i = rng.randrange(n)
        o = ref.objects[i]
        if variant == "moved":
            changed = with_object(ref, i, dx=o.dx + rng.choice((-1, 1)) * rng.uniform(5, 7),
                                  dy=o.dy + rng.choice((-1, 1)) * rng.uniform(3, 5))
        elif variant == "shaded":
            changed = with_object(ref, i, shade=_shade(rng, o.color))
        elif variant == "scaled":
            changed = with_object(ref, i, scale=rng.choice((0.72, 1.3)))
        else:
            changed = with_object(ref, i, color=rng.choice([c for c in SCENE_COLORS if c != o.color]))
        out.append(changed)
    return ref, [_photometric(rng, s) for s in out]


def build(b: Builder, _: BuildContext) -> None:
    sz, rng = b.sizes, b.rng
    n_groups = max(math.ceil(sz.pool / GROUP), sz.test + sz.val)
    groups = [group(rng) for _ in range(n_groups)]
    cands = []
    members = []
    for _ref, group_cands in groups:
        members.append([b.candidate(None, s, variant=v) for v, s in zip(VARIANTS, group_cands)])
        cands.extend(members[-1])
    b.pool(4, cands)
    for split, g in zip(b.eval_splits(), rng.sample(range(n_groups), sz.test + sz.val)):
        b.query(split, 4, None, groups[g][0], [members[g][0]], role="reference")
    for _ in range(sz.train):
        ref, group_cands = group(rng)
        b.query("train", 4, None, ref, [b.candidate(None, group_cands[0], variant="jitter")], role="reference")


SPEC = DatasetSpec(
    Dataset("twinpix", 12, Probe.PLAIN),
    tsv_name="TwinPix",
    instructions={
        4: (
            "Find an image that is nearly identical to this one.",
            "Retrieve the closest duplicate of this picture.",
            "Identify the image that shows the same scene.",
            "Find the image that looks most like this one.",
        ),
    },
    build=build,
)
