"""The benchmark's design, checked with a cheap proxy retriever instead of a trained model.

The proxy is lexical (TF-IDF over words and word pairs; a word after "without" counts against a
candidate, as a retriever trained on rewrites would learn). It sees only text: the original
records ("none") or the records with the stand-in's enhancement ("corpus", "query", "both"),
composed by ``rare.data.views`` exactly as training and evaluation compose them. What it shows:
without enhancement the silent evidence is out of reach (image sides have no text, knowledge
questions match every passage alike), with it knowledge and compositional positives become
findable, and the near-duplicate control stays out of reach of text alone.
"""

import math
import re
from collections import Counter

import pytest

from rare.benchmark import generate
from rare.config.data import BenchmarkSizes, DataParams
from rare.config.enhance import StandinNoise
from rare.config.ops import CAPTION, REFINE, RESOLVE, REWRITE
from rare.data.layout import MBEIRRoot
from rare.data.records import Enhanced, iter_candidates, iter_queries
from rare.data.views import combine
from rare.enhance.backends.interface import EnhanceRequest
from rare.enhance.backends.standin import StandinBackend
from rare.stages.variants import VARIANTS

TOKEN = re.compile(r"[a-z0-9]+")


def route(side: str, text: str, has_image: bool) -> str | None:
    """The paper's routing (the engine's table does the same by default)."""
    if not has_image:
        return None
    if side == "corpus":
        return REFINE if text else CAPTION
    if not text:
        return CAPTION
    question = text.rstrip().endswith("?") or re.match(r"\s*(what|where|why|when|which|how)\b", text, re.I)
    return RESOLVE if question else REWRITE


def enhanced(backend, side: str, key: str, text: str, has_image: bool, src: str | None) -> Enhanced | None:
    op = route(side, text, has_image)
    if op is None:
        return None
    (r,) = backend.generate([EnhanceRequest(key, op, side, text, None, "", "", 128, src)])
    return Enhanced(op, "ok" if r.text else "failed", r.text)


def features(text: str) -> tuple[Counter, set[str]]:
    words, negated, skip = [], set(), False
    for w in TOKEN.findall(text.lower()):
        if skip:
            negated.add(w)
            skip = False
        elif w == "without":
            skip = True
        else:
            words.append(w)
    return Counter(words + [f"{a}_{b}" for a, b in zip(words, words[1:])]), negated


def proxy_recall(root: MBEIRRoot, backend, variant: str) -> dict[str, float]:
    """Headline R@k per dataset-task on the local test pools; ties count as expected under random order."""
    use_corpus, use_query = VARIANTS[variant].sides
    out = {}
    for dt in root.eval_tasks("test"):
        cands = list(iter_candidates(root.local_pool(dt)))
        feats = [features(combine(c.txt, enhanced(backend, "corpus", c.did, c.txt, bool(c.img_path), c.src_content),
                                  use_corpus, "append"))[0] for c in cands]
        df = Counter(w for f in feats for w in f)
        idf = {w: math.log(1 + len(cands) / n) for w, n in df.items()}
        norms = [math.sqrt(sum((idf[w] * v) ** 2 for w, v in f.items())) or 1.0 for f in feats]
        hits, qs = 0.0, list(iter_queries(root.query_file("test", dt.dataset, dt.task_id)))
        for q in qs:
            text = combine(q.txt, enhanced(backend, "query", q.qid, q.txt, bool(q.img_path), q.src_content),
                           use_query, "replace")
            qf, neg = features(text)
            scores = [(sum(idf[w] ** 2 * v * f[w] for w, v in qf.items() if w in f)
                       - sum(2 * idf[w] ** 2 for w in neg if w in f)) / n for f, n in zip(feats, norms)]
            best = max(s for s, c in zip(scores, cands) if c.did in q.pos)
            above, tied = sum(s > best for s in scores), sum(s == best for s in scores)
            hits += min(1.0, max(0, dt.headline_k - above) / tied)
        out[dt.name] = 100 * hits / len(qs)
    return out


@pytest.fixture(scope="module")
def proxy_root(tmp_path_factory):
    path = tmp_path_factory.mktemp("proxy") / "root"
    generate(path, DataParams(sizes=BenchmarkSizes(train=40, val=2, test=40, pool=300)))
    return MBEIRRoot(path)


@pytest.fixture(scope="module")
def recall(proxy_root):
    clean = StandinBackend()
    return {v: proxy_recall(proxy_root, clean, v) for v in VARIANTS}


def test_without_enhancement_silent_evidence_and_knowledge_are_out_of_reach(recall):
    none = recall["none"]
    for name in ("glyphcaps_task0", "glyphcaps_task3", "twinpix_task4", "tweakset_task7"):
        assert none[name] < 8, (name, none[name])  # an image side has no text: chance level
    for name in ("emblemkb_task6", "emblemkb_task8"):
        assert none[name] < 25, (name, none[name])  # the question fits every passage (only its category word helps)
    assert none["factwiki_task1"] > 90  # the text control: the query names what it wants


def test_query_enhancement_makes_knowledge_positives_findable(recall):
    for name in ("emblemkb_task6", "emblemkb_task8"):
        assert recall["query"][name] > 90 and recall["both"][name] > 90
        assert recall["corpus"][name] < recall["none"][name] + 10  # the passage never describes the emblem


def test_compositional_positives_need_the_rewrite_and_the_captions(recall):
    t7 = {v: recall[v]["tweakset_task7"] for v in VARIANTS}
    assert t7["both"] > 20 and t7["both"] > 2 * max(t7["none"], t7["corpus"], t7["query"]), t7


def test_captions_bridge_the_plain_image_tasks_but_not_the_near_duplicates(recall):
    assert recall["corpus"]["glyphcaps_task0"] > 60 and recall["query"]["glyphcaps_task3"] > 60
    assert recall["both"]["twinpix_task4"] < 85  # seven caption-identical look-alikes: pixels must decide
    assert recall["both"]["factwiki_task1"] == recall["none"]["factwiki_task1"]  # text only: nothing to enhance


def test_a_worse_stand_in_retrieves_worse(proxy_root, recall):
    noisy = proxy_recall(proxy_root, StandinBackend(StandinNoise(drop_detail=0.5, wrong_attribute=0.3,
                                                                 fail_entity=1.0)), "both")
    assert noisy["emblemkb_task6"] < 25  # no entity named: the passage is as unreachable as without enhancement
    # ...but the card's visual context ("blue shield emblem with gold star") still meets the generic
    # description in the question ("the blue shield emblem"): the corpus side's own path to knowledge
    assert noisy["emblemkb_task6"] + 15 < noisy["emblemkb_task8"] < recall["both"]["emblemkb_task8"] - 25
    assert noisy["glyphcaps_task0"] < recall["both"]["glyphcaps_task0"] - 15
