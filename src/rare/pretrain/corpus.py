"""The pretraining corpus: scenes from the benchmark's world with web-alt-text-like captions.

Real CLIP learns to see from alt-text, which names what is obviously in a picture and little
else. These captions do the same: the colour and shape of each object, with counts. They never
name what the benchmark probes as silent evidence (sizes, places, rendered words, entity names,
emblem details, fine shades): a model pretrained here sees coarse content, as CLIP does, and
must still learn the rest, or get it from enhanced text. The scenes come from their own seed
stream, and the templates differ from every benchmark caption's, so no caption or image is
shared with any benchmark split (tests/test_pretrain_corpus.py checks both by hashing).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace

from rare.benchmark.scene import Scene, sample_scene

MAX_OBJECTS = 4
WORD_P = 0.4  # the benchmark's images carry rendered words; alt-text does not transcribe them
NUMBERS = {2: "two", 3: "three", 4: "four"}
# Alt-text phrasings; none is a glyphcaps template, so no caption can equal a benchmark caption.
TEMPLATES = ("Clip art of {list}", "Flat illustration with {list}", "Simple graphic showing {list}",
             "{List}, vector drawing", "Stock image: {list}", "Drawing of {list}")


@dataclass(frozen=True)
class AltTextPair:
    scene: Scene
    caption: str


def alt_text(rng: random.Random, scene: Scene) -> str:
    """"Clip art of a red circle and two blue stars": colours, shapes and counts, nothing else."""
    items = sorted(Counter(o.label for o in scene.objects).items())
    rng.shuffle(items)
    phrases = [f"a {label}" if n == 1 else f"{NUMBERS[n]} {label}s" for label, n in items]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return rng.choice(TEMPLATES).format(list=listed, List=listed[0].upper() + listed[1:])


def _photometric(rng: random.Random, scene: Scene) -> Scene:
    """Half the scenes get the small brightness/offset changes the benchmark's renders have."""
    if rng.random() < 0.5:
        return scene
    return replace(scene, brightness=round(rng.uniform(0.94, 1.06), 3),
                   shift=(round(rng.uniform(-1, 1), 2), round(rng.uniform(-1, 1), 2)))


def build_corpus(seed: int, n: int) -> list[AltTextPair]:
    """``n`` (scene, caption) pairs on the stream ``rare-pretrain:<seed>`` (the benchmark's are ``rare-bench:``)."""
    rng = random.Random(f"rare-pretrain:{seed}")
    out = []
    for _ in range(n):
        scene = _photometric(rng, sample_scene(rng, max_objects=MAX_OBJECTS, word_p=WORD_P))
        out.append(AltTextPair(scene, alt_text(rng, scene)))
    return out
