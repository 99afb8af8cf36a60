"""The pretraining corpus: disjoint from every benchmark split (by hashing), and its captions name
only colours, shapes and counts, never the silent evidence the benchmark probes."""

from __future__ import annotations

import hashlib
import io
import re

from rare.benchmark.generate import build_datasets
from rare.benchmark.render import render
from rare.benchmark.vocab import (
    BACKGROUNDS,
    CATEGORIES,
    CELLS,
    CRAFTS,
    EMBLEM_COLORS,
    EMBLEM_SHAPES,
    EMBLEM_SYMBOLS,
    FIRST_NAMES,
    SCENE_COLORS,
    SHAPES,
    SIZES,
)
from rare.benchmark.world import FACT_KEYS
from rare.config.data import DataParams
from rare.pretrain.corpus import NUMBERS, TEMPLATES, build_corpus


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _png(scene) -> bytes:  # noqa: ANN001
    buf = io.BytesIO()
    render(scene, 64).save(buf, format="PNG", compress_level=6)  # what the benchmark writer stores
    return buf.getvalue()


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_corpus_shares_no_caption_and_no_image_with_any_benchmark_split() -> None:
    pairs = build_corpus(0, 3000)
    default = build_datasets(DataParams(preset="default"))
    texts = set()
    for b in default:
        for records in b.queries.values():
            texts |= {_sha(r["query_txt"].encode()) for r in records if r["query_txt"]}
        for pool in [*b.pools.values(), b.train_pool]:
            texts |= {_sha(c["txt"].encode()) for c in pool if c["txt"]}
    captions = {_sha(p.caption.encode()) for p in pairs}
    assert len(texts) > 5000 and len(captions) > 2000
    assert not captions & texts

    bench_images = {_sha(_png(scene)) for b in build_datasets(DataParams(preset="tiny")) for scene in b.images.values()}
    corpus_images = {_sha(_png(p.scene)) for p in pairs[:600]}
    assert len(bench_images) > 300 and len(corpus_images) == 600
    assert not corpus_images & bench_images


def test_corpus_is_its_own_seeded_stream() -> None:
    assert build_corpus(0, 50) == build_corpus(0, 50)
    assert [p.caption for p in build_corpus(1, 50)] != [p.caption for p in build_corpus(0, 50)]


def test_captions_name_colours_shapes_and_counts_and_none_of_the_silent_evidence() -> None:
    pairs = build_corpus(0, 3000)
    names = build_datasets(DataParams(preset="tiny"))
    entity_words = set()
    for b in names:
        for scene in b.images.values():
            if scene.mark is not None:
                entity_words |= _words(scene.mark.name)
    assert entity_words, "the tiny benchmark has entity marks to check against"
    silent = (set(SIZES) | {w for cell in CELLS for w in cell.split()} | set(CATEGORIES) | _words(" ".join(FIRST_NAMES))
              | (set(EMBLEM_SHAPES) - set(SHAPES)) | (set(EMBLEM_SYMBOLS) - set(SHAPES)) | {"border", "emblem", "logo"}
              | ((set(EMBLEM_COLORS) | _words(" ".join(BACKGROUNDS))) - set(SCENE_COLORS)) | _words(" ".join(CRAFTS))
              | set(FACT_KEYS) | entity_words
              | {"light", "dark", "bright", "shade", "tiny", "big", "huge", "above", "below", "beside", "corner",
                 "middle", "word", "text", "letters", "reads", "written"})
    objects = set(SCENE_COLORS) | set(SHAPES) | {f"{s}s" for s in SHAPES}  # plurals as the benchmark writes them
    silent -= objects  # "star" of "star charts" is still the shape's name
    template_words = _words(" ".join(TEMPLATES).replace("{list}", "").replace("{List}", ""))
    allowed = objects | set(NUMBERS.values()) | {"a", "and"} | template_words
    assert not template_words & silent
    rendered = set()
    for p in pairs:
        words = _words(p.caption)
        assert words <= allowed, (p.caption, words - allowed)
        assert not words & silent, (p.caption, words & silent)
        for w in p.scene.words:
            rendered.add(w.text.lower())
            assert w.text.lower() not in words, p.caption
        for o in p.scene.objects:  # every object is named by colour and shape
            assert o.color in words and (o.shape in words or f"{o.shape}s" in words), p.caption
    # the images do carry the silent evidence the captions leave out
    assert len(rendered) > 100
    assert {o.size for p in pairs for o in p.scene.objects} == set(SIZES)
    assert {o.cell for p in pairs for o in p.scene.objects} == set(CELLS)
