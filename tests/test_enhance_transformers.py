"""The transformers backend for real, on a tiny random LLaVA built, saved and reloaded from disk."""

import json

import pytest
from PIL import Image

from rare.config.enhance import EnhanceParams
from rare.enhance.backends import make_backend
from rare.enhance.backends.chat import fit_pixels
from rare.enhance.backends.interface import EnhanceRequest
from rare.enhance.backends.transformers import TransformersBackend
from rare.enhance.prompts import PromptSet
from rare.enhance.side import enhance_side

PROMPTS = PromptSet.load("v1")


def request(op, side, text="", image=None, cap=6):
    t = PROMPTS.template(op, side)
    return EnhanceRequest(key=f"k-{op}-{text}", op=op, side=side, text=text, image=image, system=t.system,
                          instruction=t.render(text), max_new_tokens=cap)


@pytest.fixture(scope="module")
def backend(tiny_vlm):  # noqa: F811
    b = TransformersBackend(str(tiny_vlm), device="cpu", max_pixels=40 * 40)
    yield b
    b.close()


@pytest.fixture
def images(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (200, 100), "red").save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return good, bad


def test_fit_pixels_keeps_aspect_under_the_cap():
    img = fit_pixels(Image.new("RGB", (4000, 1000)), 40_000)
    assert img.size == (400, 100)
    small = Image.new("RGB", (10, 10))
    assert fit_pixels(small, 40_000) is small


def test_every_image_prompt_carries_its_image_and_instructions(backend, images):
    good, bad = images
    reqs = [request("caption", "corpus", image=good), request("refine", "corpus", "a passage", good),
            request("resolve", "query", "what is this?", good), request("rewrite", "query", "make it blue"),
            request("caption", "query", image=bad)]
    prepared = backend.prepare(reqs)
    for req, prep in zip(reqs[:3], prepared[:3]):
        assert prep.error is None and prep.prompt.count("<image>") == 1  # the image placeholder, once
        assert req.system in prep.prompt and req.instruction in prep.prompt  # the system line AND the instruction
        assert prep.prompt.index(req.system) < prep.prompt.index("<image>") < prep.prompt.index(req.instruction)
        assert prep.prompt.endswith("<|im_start|>assistant\n")  # built by the model's chat template
        assert isinstance(prep.image, Image.Image) and prep.image.width * prep.image.height <= 40 * 40
    rewrite = prepared[3]
    assert "<image>" not in rewrite.prompt and rewrite.image is None and "make it blue" in rewrite.prompt
    assert prepared[4].error.startswith("image_unreadable: ") and "bad.png" in prepared[4].error


def test_generate_is_batched_deterministic_and_isolates_bad_items(backend, images):
    good, bad = images
    reqs = [request("caption", "corpus", image=good, cap=5), request("caption", "query", image=bad),
            request("rewrite", "query", "make it blue", cap=7), request("resolve", "query", "what is it?", good)]
    first = backend.generate(reqs)
    assert len(first) == 4
    assert first[1].text is None and first[1].error.startswith("image_unreadable")
    prepared = backend.prepare(reqs)
    for i, cap in [(0, 5), (2, 7), (3, 6)]:
        res, prep = first[i], prepared[i]
        assert isinstance(res.text, str) and res.error is None
        assert 1 <= res.tokens_out <= cap and (res.finish_reason == "stop" or res.tokens_out == cap)
        alone = backend.processor(text=[prep.prompt], images=[prep.image] if prep.image else None)
        assert res.tokens_in == len(alone["input_ids"][0])  # padding excluded, image tokens included
    again = backend.generate(reqs)
    assert [(r.text, r.tokens_in, r.tokens_out) for r in again] == [(r.text, r.tokens_in, r.tokens_out) for r in first]


def test_engine_with_the_transformers_backend_end_to_end(tiny_root, tiny_vlm, tmp_path):  # noqa: F811
    params = EnhanceParams(backend="transformers", model=str(tiny_vlm), cache_dir=str(tmp_path / "cache"),
                           max_new_tokens={"corpus": 6, "query": 6}, batch_size=8, max_failure_rate=1.0,
                           transformers={"device": "cpu"})
    outcome = enhance_side(params, tiny_root, tmp_path / "out", "queries", progress=False)
    s = outcome.summary
    assert (s["backend"], s["model"]) == ("transformers", str(tiny_vlm))
    assert s["items"] == sum(s["files"].values()) and s["ok"] + s["failed"] == s["enhanceable"] > 0
    assert s["tokens_in"] > 0 and outcome.runtime["generated"] > 0
    statuses = {}
    for line in (tmp_path / "out/query/test/mbeir_cirr_task7_test.jsonl").read_text().splitlines():
        e = json.loads(line)["enhanced"]
        assert e["op"] == "rewrite" and e["backend"] == "transformers"
        assert (e["txt"] is None) == (e["status"] == "failed") and (e["cause"] is None) == (e["status"] == "ok")
        statuses[e["status"]] = statuses.get(e["status"], 0) + 1
    assert sum(statuses.values()) == 3
    # Random weights emit garbage, but the same garbage: a fresh cache reproduces every byte.
    rerun = enhance_side(params.model_copy(update={"cache_dir": str(tmp_path / "cache2")}), tiny_root,
                         tmp_path / "out2", "queries", progress=False)
    assert rerun.runtime["generated"] == outcome.runtime["generated"]
    for rel in s["files"]:
        assert (tmp_path / "out" / rel).read_bytes() == (tmp_path / "out2" / rel).read_bytes()


def test_factory_builds_the_configured_backend(tiny_vlm):  # noqa: F811
    params = EnhanceParams(backend="transformers", model=str(tiny_vlm), transformers={"device": "cpu"})
    built = make_backend(params)
    assert isinstance(built, TransformersBackend) and (built.name, built.model) == ("transformers", str(tiny_vlm))
