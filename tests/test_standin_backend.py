"""The offline stand-in: exact outputs per op, noise that moves outputs as configured, determinism, refusals."""

import json
import re

import pytest

from rare.config.enhance import StandinNoise
from rare.data.layout import MBEIRRoot
from rare.data.records import iter_queries
from rare.enhance.backends.interface import Backend, EnhanceRequest
from rare.enhance.backends.standin import StandinBackend

SCENE = {"background": "cream",
         "objects": [{"shape": "square", "color": "blue", "size": "small", "pos": "bottom right"},
                     {"shape": "circle", "color": "red", "size": "large", "pos": "top left"}],
         "words": [{"text": "ZOR", "color": "black", "pos": "bottom"}],
         "relations": [["red circle", "left of", "blue square"]], "entity": None}
ENTITY = {"name": "Veltrano Guild", "category": "guild", "pos": "bottom left", "size": "small",
          "emblem": {"shape": "shield", "color": "blue", "symbol": "star", "symbol_color": "gold", "border": "red"}}
PHOTO = {"background": "white", "objects": [{"shape": "cross", "color": "yellow", "size": "small", "pos": "top right"}],
         "words": [], "relations": [], "entity": ENTITY}
CARD = {"background": "white", "objects": [], "words": [], "relations": [],
        "entity": {**ENTITY, "pos": "center", "size": "large"}}


def src(image=None, **extra) -> str:
    return json.dumps({"schema": "rare-bench/1", "dataset": "test", **({"image": image} if image else {}), **extra})


def req(op, image=None, text="", side="corpus", key="k1", content=None) -> EnhanceRequest:
    return EnhanceRequest(key=key, op=op, side=side, text=text, image=None, system="sys", instruction="do it",
                          max_new_tokens=128, src_content=content if content is not None else src(image))


def one(backend, request) -> str:
    (result,) = backend.generate([request])
    assert result.error is None, result.error
    return result.text


def test_is_a_backend_named_as_a_stand_in():
    b = StandinBackend()
    assert isinstance(b, Backend) and b.name == "standin" and b.model == "rare-standin-v1"


# ------------------------------------------------------------------------- exact ops
def test_caption_states_subject_first_then_every_visible_detail():
    assert one(StandinBackend(), req("caption", SCENE)) == (
        'large red circle at top left, small blue square at bottom right, black text "ZOR" at bottom, '
        "red circle left of blue square, cream background")


def test_caption_counts_identical_objects():
    twins = {**SCENE, "background": "white", "words": [], "relations": [], "objects": [
        {"shape": "star", "color": "green", "size": "small", "pos": "left"},
        {"shape": "star", "color": "green", "size": "small", "pos": "right"}]}
    assert one(StandinBackend(), req("caption", twins)) == "two small green stars at left and right"


def test_caption_names_the_entity_and_describes_its_emblem():
    assert one(StandinBackend(), req("caption", PHOTO, side="query")) == (
        "Veltrano Guild emblem at bottom left, blue shield with gold star, red border, small yellow cross at top right")


def test_refine_adds_only_what_the_text_does_not_say():
    named = "Veltrano Guild: guild in Orsk, founded in 1432."
    assert one(StandinBackend(), req("refine", CARD, text=named)) == "blue shield emblem with gold star, red border"
    assert one(StandinBackend(), req("refine", CARD, text="A guild in Orsk.")) == (
        "Veltrano Guild emblem, blue shield with gold star, red border")


def test_caption_respects_the_word_caps_by_whole_phrases():
    cells = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
    busy = {**SCENE, "objects": [{"shape": s, "color": c, "size": "large", "pos": p} for s, c, p in
                                 zip(["circle", "square", "star", "cross", "hexagon", "triangle"] * 2,
                                     ["red", "blue", "green", "pink", "gray", "black", "orange", "brown", "purple"],
                                     cells)]}
    busy["relations"] = [[f"{a['color']} {a['shape']}", "left of", f"{b['color']} {b['shape']}"]
                         for a in busy["objects"] for b in busy["objects"] if a is not b]
    query, corpus = one(StandinBackend(), req("caption", busy, side="query")), one(StandinBackend(), req("caption", busy))
    assert 40 < len(query.split()) <= 50 and 90 < len(corpus.split()) <= 100
    assert corpus.startswith(query) and not query.endswith(",")


@pytest.mark.parametrize("question, resolved", [
    ("In which year was this guild founded?", "In which year was the Veltrano Guild founded?"),
    ("Who founded this?", "Who founded the Veltrano Guild?"),
    ("What is it known for?", "The Veltrano Guild: What is it known for?"),
])
def test_resolve_names_the_subject_in_a_few_words_and_changes_nothing_else(question, resolved):
    assert one(StandinBackend(), req("resolve", PHOTO, text=question, side="query")) == resolved


def test_resolve_names_a_generic_object_by_colour_and_category():
    assert one(StandinBackend(), req("resolve", SCENE, text="What is this made of?", side="query")) == \
        "What is the red circle made of?"


def test_resolve_names_every_benchmark_entity_and_never_answers(tiny_benchmark_root):  # noqa: F811
    root, b, n = MBEIRRoot(tiny_benchmark_root), StandinBackend(), 0
    for q in iter_queries(root.query_file("test", "emblemkb", 6)):
        ann = json.loads(q.src_content)
        out = one(b, req("resolve", text=q.txt, side="query", key=q.qid, content=q.src_content))
        assert ann["image"]["entity"]["name"] in out and ann["answer"].lower() not in out.lower()
        n += 1
    assert n == 8


@pytest.mark.parametrize("request_text, constraints", [
    ("Please make the square green and get rid of the circle, keeping everything else the same.",
     "green square, without circle"),
    ("I would like you to add a small red star, plus have the hexagon get a bit smaller.",
     "with small red star, small hexagon"),
    ("Take this picture and replace the cross with a triangle, and on top of that enlarge the circle.",
     "triangle, without cross, large circle"),
    ("green square, without circle", "green square, without circle"),
    ("I want it to look more cheerful overall please.", "look more cheerful overall"),
])
def test_rewrite_keeps_target_constraints_and_drops_filler(request_text, constraints):
    assert one(StandinBackend(), req("rewrite", text=request_text, side="query")) == constraints


def test_rewrite_reads_the_request_text_only_never_the_reference_image():
    text = "Please make the square green."
    outs = {one(StandinBackend(), req("rewrite", image, text=text, side="query")) for image in (SCENE, PHOTO, None)}
    assert outs == {"green square"}


def test_rewrite_recovers_every_benchmark_edit(tiny_benchmark_root):  # noqa: F811
    root, b = MBEIRRoot(tiny_benchmark_root), StandinBackend()
    qs = [q for s in ("train", "val", "test") for q in iter_queries(
        root.query_file(s, "tweakset", 7 if s != "train" else None))]
    for q in qs:
        out = one(b, req("rewrite", text=q.txt, side="query", key=q.qid, content=q.src_content)).split(", ")
        want = []
        for e in json.loads(q.src_content)["edit"]:
            want += {"recolor": lambda: [f"{e['to']} {e['shape']}"], "remove": lambda: [f"without {e['shape']}"],
                     "add": lambda: [f"with {e['size']} {e['color']} {e['shape']}"],
                     "resize": lambda: [f"{e['to']} {e['shape']}"],
                     "reshape": lambda: [e["to"], f"without {e['from']}"]}[e["op"]]()
        assert out == want, q.txt
    assert len(qs) == 24


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("content, cause", [
    ("", "no scene annotation in src_content (empty)"),
    ('{"id": 3, "wiki_title": "Eiffel Tower"}', "no 'rare-bench/*' schema tag"),
    ("not json", "(not JSON)"),
])
def test_records_without_a_benchmark_annotation_fail_with_the_cause(content, cause):
    (result,) = StandinBackend().generate([req("caption", content=content)])
    assert result.text is None and result.error.startswith("stand-in: ") and cause in result.error


def test_an_image_op_without_an_image_annotation_and_an_unknown_op_fail():
    a, b = StandinBackend().generate([req("caption", content=src(None)), req("translate", SCENE)])
    assert a.text is None and "describes no image" in a.error
    assert b.text is None and "unknown op 'translate'" in b.error


def test_results_come_back_one_per_request_in_order_with_token_counts():
    results = StandinBackend().generate([req("caption", SCENE, key="a"), req("caption", content=""),
                                         req("rewrite", text="Please remove the star.", key="c")])
    assert [r.text for r in results] == [one(StandinBackend(), req("caption", SCENE)), None, "without star"]
    assert results[0].tokens_out == len(results[0].text.split()) and results[0].tokens_in == 3
    assert results[0].finish_reason == "stop"


# -------------------------------------------------------------------------------- noise
def requests(n: int, op: str = "caption", image=SCENE, text: str = "") -> list[EnhanceRequest]:
    return [req(op, image, text=text, key=f"item-{i}") for i in range(n)]


def test_fail_entity_one_never_names_and_zero_always_names(tiny_benchmark_root):  # noqa: F811
    root = MBEIRRoot(tiny_benchmark_root)
    qs = list(iter_queries(root.query_file("test", "emblemkb", 8)))
    never, always = StandinBackend(StandinNoise(fail_entity=1.0)), StandinBackend(StandinNoise(fail_entity=0.0))
    for q in qs:
        name = json.loads(q.src_content)["image"]["entity"]["name"]
        for op, text in (("caption", ""), ("resolve", q.txt)):
            r = req(op, text=text, side="query", key=q.qid, content=q.src_content)
            assert name not in one(never, r) and name in one(always, r)
    generic = one(never, req("resolve", PHOTO, text="Who founded this guild?", side="query"))
    assert generic == "Who founded the blue shield emblem?"


def test_wrong_attribute_one_changes_every_colour_and_size():
    out = one(StandinBackend(StandinNoise(wrong_attribute=1.0)), req("caption", SCENE))
    assert not re.search(r"\b(red|blue|black)\b", out) and not re.search(r"\blarge \w+ circle|small \w+ square", out)
    assert out.count("circle") == 2 and "ZOR" not in out  # the word is misread too


def test_drop_detail_one_leaves_only_colour_and_shape():
    assert one(StandinBackend(StandinNoise(drop_detail=1.0)), req("caption", SCENE)) == "red circle, blue square"


def test_noise_rates_move_outputs_at_the_configured_rate():
    b = StandinBackend(StandinNoise(drop_detail=0.3, wrong_attribute=0.2), seed=5)
    outs = [r.text for r in b.generate(requests(2000))]
    kept_places = sum(o.count(" at top left") + o.count(" at bottom right") for o in outs) / (2 * len(outs))
    red_kept = sum("red circle" in o for o in outs) / len(outs)
    assert abs(kept_places - 0.7) < 0.04 and abs(red_kept - 0.8) < 0.04


def test_noise_is_deterministic_per_request_key_and_seed():
    noise = StandinNoise(drop_detail=0.4, wrong_attribute=0.4, fail_entity=0.5)
    reqs = requests(200, "caption", PHOTO)
    a = [r.text for r in StandinBackend(noise, seed=1).generate(reqs)]
    b = [r.text for r in StandinBackend(noise, seed=1).generate(list(reversed(reqs)))][::-1]
    c = [r.text for r in StandinBackend(noise, seed=2).generate(reqs)]
    assert a == b and a != c and len(set(a)) > 20
    assert StandinBackend(noise, 1).model != StandinBackend(noise, 2).model != StandinBackend().model
    assert StandinBackend(seed=1).model == StandinBackend(seed=2).model == "rare-standin-v1"
