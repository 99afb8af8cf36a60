"""The offline stand-in for a VLM, for the embedded benchmark only. It is NOT a model.

It reads the ground-truth scene annotation that the benchmark stores in ``src_content`` and
writes what a strong VLM following the prompt's intent would say: dense captions (subject
first, colours, shapes, counts, rendered words, places, relations, entity names), visual
context to add to a text, questions with their subject named, and concise constraints from a
modification request. Being built on the truth, it is an upper bound on a VLM; the noise knobs
(dropped details, wrong attributes, failed entity naming) bring it down to see how VLM quality
moves retrieval. Noise is a deterministic function of (seed, request key).

``rewrite`` reads only the request text, as the paper's text-only rewrite does: the reference
image is never consulted. Records without a benchmark annotation (real M-BEIR) get an error
result, so the engine records them as failures instead of inventing text.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from typing import Any

from rare.benchmark.vocab import CATEGORIES, EMBLEM_COLORS, EMBLEM_SHAPES, SCENE_COLORS, SHAPES
from rare.config.enhance import StandinNoise
from rare.config.ops import CAPTION, REFINE, RESOLVE, REWRITE
from rare.enhance.backends.interface import EnhanceRequest, EnhanceResult

VERSION = "v1"  # bump whenever the same request would get a different text
SCHEMA_PREFIX = "rare-bench/"
QUERY_WORDS, CORPUS_WORDS = 50, 100  # the prompts' caps: query captions are shorter

COLORS, ALL_COLORS = tuple(SCENE_COLORS), tuple(EMBLEM_COLORS)  # objects / emblems
ALL_SHAPES = tuple(dict.fromkeys(SHAPES + EMBLEM_SHAPES))
_NUMBERS = {2: "two", 3: "three", 4: "four"}


class _Noise:
    """Draws for one request; with every rate at 0 nothing is drawn and the output is exact."""

    def __init__(self, rates: StandinNoise, rng: random.Random | None):
        self.rates, self.rng = rates, rng

    def hit(self, rate: float) -> bool:
        return self.rng is not None and rate > 0 and self.rng.random() < rate

    def drop(self) -> bool:
        return self.hit(self.rates.drop_detail)

    def color(self, color: str, palette: tuple[str, ...] = COLORS) -> str:
        if self.hit(self.rates.wrong_attribute):
            assert self.rng is not None
            return self.rng.choice([c for c in palette if c != color])
        return color

    def size(self, size: str) -> str:
        return {"small": "large", "large": "small"}.get(size, size) if self.hit(self.rates.wrong_attribute) else size

    def word(self, text: str) -> str:
        if not self.hit(self.rates.wrong_attribute) or not text:
            return text
        assert self.rng is not None
        i = self.rng.randrange(len(text))
        return text[:i] + self.rng.choice([c for c in "BDGKLMPRSTVZ" if c != text[i]]) + text[i + 1:]

    def fail_entity(self) -> bool:
        return self.hit(self.rates.fail_entity)


# ------------------------------------------------------------------ captions
def _emblem_phrases(entity: dict[str, Any], noise: _Noise, named: bool) -> list[str]:
    e = entity["emblem"]
    body = f"{noise.color(e['color'], ALL_COLORS)} {e['shape']}"
    symbol = f"{noise.color(e['symbol_color'], ALL_COLORS)} {e['symbol']}"
    where = f" at {entity['pos']}" if entity.get("size") == "small" else ""
    if named:
        phrases = [f"{entity['name']} emblem{where}", body if noise.drop() else f"{body} with {symbol}"]
    else:
        phrases = [f"{body} emblem{where}" if noise.drop() else f"{body} emblem with {symbol}{where}"]
    if e.get("border") and not noise.drop():
        phrases.append(f"{noise.color(e['border'], ALL_COLORS)} border")
    return phrases


def _object_phrases(image: dict[str, Any], noise: _Noise) -> tuple[list[str], dict[str, str]]:
    """Objects grouped into counts, large ones first; also how each true label was described."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    said: dict[str, str] = {}
    for o in image.get("objects", []):
        label = f"{o['color']} {o['shape']}"
        color = said[label].split(" ")[0] if label in said else noise.color(o["color"])
        said[label] = f"{color} {o['shape']}"
        size = noise.size(o["size"])
        groups.setdefault((size, color, o["shape"]), []).append(o["pos"])
    order = sorted(groups, key=lambda k: k[0] != "large")  # stable: large first, then as annotated
    phrases = []
    for size, color, shape in order:
        places = [p for p in groups[(size, color, shape)] if not noise.drop()]
        n = len(groups[(size, color, shape)])
        head = f"{size} " if not noise.drop() else ""
        noun = f"{head}{color} {shape}" if n == 1 else f"{_NUMBERS.get(n, str(n))} {head}{color} {shape}s"
        phrases.append(f"{noun} at {' and '.join(places)}" if places else noun)
    return phrases, said


def describe(image: dict[str, Any], noise: _Noise, name_entity: bool = True, skip: str = "") -> list[str]:
    """Comma-separable phrases, most salient first: entity, objects, words, relations, background.
    ``skip`` is a text the description must not repeat (refine): an entity it names is not named again."""
    phrases: list[str] = []
    entity = image.get("entity")
    if entity:
        named = name_entity and not noise.fail_entity() and entity["name"].lower() not in skip.lower()
        phrases += _emblem_phrases(entity, noise, named)
    objects, said = _object_phrases(image, noise)
    phrases += objects
    for w in image.get("words", []):
        if not noise.drop():
            phrases.append(f'{noise.color(w["color"])} text "{noise.word(w["text"])}" at {w["pos"]}')
    for a, rel, b in image.get("relations", []):
        if not noise.drop():
            phrases.append(f"{said.get(a, a)} {rel} {said.get(b, b)}")
    bg = image.get("background", "white")
    if bg != "white" and not noise.drop():
        phrases.append(f"{bg} background")
    return phrases


def _cap_words(phrases: list[str], limit: int) -> str:
    """Whole phrases up to the word cap (the least salient come last and go first)."""
    out, n = [], 0
    for p in phrases:
        k = len(p.split())
        if n + k > limit:
            break
        out.append(p)
        n += k
    return ", ".join(out)


# ------------------------------------------------------------------- resolve
_DEICTIC = re.compile(r"\bthis(?:\s+(?:" + "|".join(CATEGORIES) + r"|one|thing|object|emblem|picture|place))?\b",
                      re.IGNORECASE)


def subject_name(image: dict[str, Any], noise: _Noise) -> str:
    """3-5 words: the entity's name, else colour + category of the most salient thing."""
    entity = image.get("entity")
    if entity:
        if not noise.fail_entity():
            return f"the {entity['name']}"
        return f"the {noise.color(entity['emblem']['color'], ALL_COLORS)} {entity['emblem']['shape']} emblem"
    objects = sorted(image.get("objects", []), key=lambda o: o["size"] != "large")
    if objects:
        return f"the {noise.color(objects[0]['color'])} {objects[0]['shape']}"
    return "the picture"


def resolve(question: str, image: dict[str, Any], noise: _Noise) -> str:
    """The question with its deictic reference replaced by the subject's name; nothing is answered."""
    subject = subject_name(image, noise)
    if _DEICTIC.search(question):
        return _DEICTIC.sub(subject, question, count=1)
    return f"{subject[0].upper()}{subject[1:]}: {question}"


# ------------------------------------------------------------------- rewrite
_C = "(" + "|".join(ALL_COLORS + ("grey",)) + ")"
_S = "(" + "|".join(ALL_SHAPES) + ")"
_Z = "(small|large|big|tiny)"
_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], list[str]]]] = [
    (re.compile(rf"\b(?:make|paint) the (?:{_C} )?{_S} {_C}\b"), lambda m: [f"{m[3]} {m[2]}"]),
    (re.compile(rf"\bchange the colou?r of the (?:{_C} )?{_S} to {_C}\b"), lambda m: [f"{m[3]} {m[2]}"]),
    (re.compile(rf"\bhave the (?:{_C} )?{_S} turn {_C}\b"), lambda m: [f"{m[3]} {m[2]}"]),
    (re.compile(rf"\b(?:remove|drop|delete) the (?:{_C} )?{_S}\b"), lambda m: [f"without {m[2]}"]),
    (re.compile(rf"\bget rid of the (?:{_C} )?{_S}\b"), lambda m: [f"without {m[2]}"]),
    (re.compile(rf"\btake the (?:{_C} )?{_S} out\b"), lambda m: [f"without {m[2]}"]),
    (re.compile(rf"\bmake the (?:{_C} )?{_S} disappear\b"), lambda m: [f"without {m[2]}"]),
    (re.compile(rf"\bwithout (?:the |a |an )?(?:{_C} )?{_S}\b"), lambda m: [f"without {m[2]}"]),
    (re.compile(rf"\b(?:add|put|include|insert) (?:a|an|another) (?:{_Z} )?(?:{_C} )?{_S}\b"),
     lambda m: ["with " + " ".join(x for x in (_size_word(m[1]), m[2], m[3]) if x)]),
    (re.compile(rf"\b(?:make|have) the (?:{_C} )?{_S} (?:grow |get )?(?:a bit )?(bigger|larger|smaller)\b"),
     lambda m: [f"{'small' if m[3] == 'smaller' else 'large'} {m[2]}"]),
    (re.compile(rf"\b(enlarge|shrink) the (?:{_C} )?{_S}\b"),
     lambda m: [f"{'small' if m[1] == 'shrink' else 'large'} {m[3]}"]),
    (re.compile(rf"\b(?:turn|change) the (?:{_C} )?{_S} into an? {_S}\b"), lambda m: [m[3], f"without {m[2]}"]),
    (re.compile(rf"\breplace the (?:{_C} )?{_S} with an? {_S}\b"), lambda m: [m[3], f"without {m[2]}"]),
    (re.compile(rf"\bswap the (?:{_C} )?{_S} for an? {_S}\b"), lambda m: [m[3], f"without {m[2]}"]),
]
_FILLER = frozenset("""a an the this that these those it its i me my you your we our please could would kindly
just also then and plus so to be of for as is are was do does not but while keeping keep leave leaving rest
everything else same picture image one like want need go ahead starting from using base after that there
somewhere instead bit make paint change have remove drop delete get rid take out add put include insert turn
replace swap enlarge shrink""".split())


def _size_word(word: str | None) -> str | None:
    return {"big": "large", "tiny": "small"}.get(word or "", word)


def constraints(request: str) -> list[str]:
    """What the target must show, read from the request text alone, in the order it was asked."""
    text = request.lower().strip().rstrip(".")
    pieces = [p.strip() for p in text.split(",")]
    if all(0 < len(p.split()) <= 4 and not _FILLER.intersection(p.split()) for p in pieces):
        return pieces  # already concise: unchanged
    found: list[tuple[int, list[str]]] = []
    taken: list[tuple[int, int]] = []
    for pattern, make in _RULES:
        for m in pattern.finditer(text):
            if any(s < m.end() and m.start() < e for s, e in taken):
                continue
            taken.append(m.span())
            found.append((m.start(), make(m)))
    if not found:  # unknown phrasing: keep the content words, as the prompt says
        words = [w for w in re.findall(r"[a-z]+", text) if w not in _FILLER]
        return [" ".join(words)] if words else []
    return [c.replace("grey", "gray") for _, cs in sorted(found) for c in cs]


def rewrite(request: str, noise: _Noise) -> str:
    kept = []
    for c in constraints(request):
        if noise.drop():
            continue
        words = [noise.color(w) if w in COLORS else noise.size(w) if w in ("small", "large") else w
                 for w in c.split()]
        kept.append(" ".join(words))
    if not kept:  # every constraint dropped: a VLM still says something; keep the first
        kept = constraints(request)[:1]
    return ", ".join(kept)


# ------------------------------------------------------------------- backend
def annotation(src_content: str | None) -> dict[str, Any]:
    """The benchmark annotation in src_content, or ValueError saying why there is none."""
    if not src_content:
        raise ValueError("no scene annotation in src_content (empty); the stand-in only works on the embedded benchmark")
    try:
        ann = json.loads(src_content)
    except json.JSONDecodeError:
        raise ValueError("no scene annotation in src_content (not JSON); the stand-in only works on the "
                         "embedded benchmark") from None
    if not isinstance(ann, dict) or not str(ann.get("schema", "")).startswith(SCHEMA_PREFIX):
        raise ValueError(f"no scene annotation in src_content (no '{SCHEMA_PREFIX}*' schema tag); "
                         "the stand-in only works on the embedded benchmark")
    return ann


class StandinBackend:
    """Writes what a strong VLM would, from the benchmark's ground truth; see the module docstring."""

    name = "standin"

    def __init__(self, noise: StandinNoise | None = None, seed: int = 0):
        self.noise = noise or StandinNoise()
        self.seed = seed
        n = self.noise
        noisy = n.drop_detail or n.wrong_attribute or n.fail_entity
        # Goes into cache keys: changes whenever the same request would get a different text.
        self.model = f"rare-standin-{VERSION}" + (
            f"+noise(drop={n.drop_detail:g},wrong={n.wrong_attribute:g},entity={n.fail_entity:g},seed={seed})"
            if noisy else "")
        self._noisy = bool(noisy)

    def generate(self, requests: list[EnhanceRequest]) -> list[EnhanceResult]:
        return [self._one(r) for r in requests]

    def close(self) -> None:
        pass

    def _one(self, r: EnhanceRequest) -> EnhanceResult:
        try:
            text = self._text(r)
        except ValueError as exc:
            return EnhanceResult(text=None, error=f"stand-in: {exc}")
        return EnhanceResult(text=text, tokens_in=len(r.system.split()) + len(r.instruction.split()),
                             tokens_out=len(text.split()), finish_reason="stop")

    def _text(self, r: EnhanceRequest) -> str:
        ann = annotation(r.src_content)
        rng = random.Random(f"{self.seed}:{r.key}") if self._noisy else None
        noise = _Noise(self.noise, rng)
        if r.op == REWRITE:
            return rewrite(r.text, noise)
        image = ann.get("image")
        if not isinstance(image, dict):
            raise ValueError(f"the annotation describes no image, which op {r.op!r} needs")
        limit = QUERY_WORDS if r.side == "query" else CORPUS_WORDS
        if r.op == CAPTION:
            return _cap_words(describe(image, noise), limit)
        if r.op == REFINE:
            return _cap_words(describe(image, noise, skip=r.text), limit)
        if r.op == RESOLVE:
            return resolve(r.text, image, noise)
        raise ValueError(f"unknown op {r.op!r}; the stand-in does caption, refine, resolve and rewrite")
