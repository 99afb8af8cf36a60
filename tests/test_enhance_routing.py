"""The routing table (the paper's rules), its overrides from params.yaml, and the prompt files."""

from pathlib import Path

import pytest

from rare.config import ConfigError, load_section
from rare.config.enhance import RouteRule
from rare.enhance.prompts import PromptSet
from rare.enhance.routing import Router, is_question


@pytest.mark.parametrize("text, expected", [
    ("What is the name of this building?", True),
    ("which country does this belong to", True),
    ("How many floors does it have", True),
    ("the year it was built?", True),
    ("  Where's this?  ", True),
    ("is shinier and has longer sleeves", False),
    ("Whatever colour, but red", False),   # a wh-prefix is not a wh-word
    ("show it with a dog", False),
    ("", False),
])
def test_question_detection(text, expected):
    assert is_question(text) is expected


@pytest.mark.parametrize("side, text, image, op", [
    ("corpus", "", True, "caption"),
    ("corpus", "a passage", True, "refine"),
    ("corpus", "a passage", False, "none"),
    ("query", "", True, "caption"),
    ("query", "What breed is this dog?", True, "resolve"),
    ("query", "make it blue and add a hat", True, "rewrite"),
    ("query", "What breed is this dog?", False, "none"),
    ("query", "   ", True, "caption"),  # declared image,text but no text: what it carries decides
])
def test_default_routing(side, text, image, op):
    assert Router().route(side, text, image, task_id=7, dataset_id=8) == op


def test_overrides_come_first_and_match_every_given_field():
    router = Router([RouteRule(side="query", modality="image,text", task_ids=[7], dataset_ids=[7], op="resolve"),
                     RouteRule(side="query", modality="image,text", question=True, dataset_ids=[5], op="none")])
    assert router.route("query", "is darker", True, task_id=7, dataset_id=7) == "resolve"  # FashionIQ overridden
    assert router.route("query", "is darker", True, task_id=7, dataset_id=8) == "rewrite"  # CIRR keeps the default
    assert router.route("query", "what is it?", True, task_id=6, dataset_id=5) == "none"
    assert router.route("query", "find it", True, task_id=6, dataset_id=5) == "rewrite"
    assert Router().digest != router.digest  # routing changes invalidate finished shards


@pytest.mark.parametrize("rule, message", [
    ("{side: query, modality: text, op: caption}", "needs an image"),
    ("{side: query, modality: image, op: rewrite}", "needs text"),
    ("{side: corpus, modality: image, op: caption, task_ids: [3]}", "task_ids only applies to queries"),
    ("{side: corpus, modality: image, op: paint}", "enhance.routing.0.op"),
])
def test_bad_rules_fail_with_the_key(tmp_path, rule, message):
    path = tmp_path / "params.yaml"
    path.write_text(f"enhance:\n  routing:\n    - {rule}\n")
    with pytest.raises(ConfigError, match="enhance.routing") as exc:
        load_section("enhance", path)
    assert message in str(exc.value)


def test_prompt_set_v1_covers_every_op_and_side():
    prompts = PromptSet.load("v1")
    for op, side in [("caption", "corpus"), ("caption", "query"), ("refine", "corpus"),
                     ("resolve", "query"), ("rewrite", "query")]:
        t = prompts.template(op, side)
        assert t.system and t.user and "{text}" not in t.render("ZZQ")
        assert ("ZZQ" in t.render("ZZQ")) == (op != "caption")
    assert "100 words" in prompts.template("caption", "corpus").user
    assert "50 words" in prompts.template("caption", "query").user
    assert not prompts.template("caption", "query").uses_text  # captions depend on the image only
    rewritten = prompts.template("rewrite", "query").render("is red and has no collar")
    assert rewritten.endswith("Request: is red and has no collar")
    assert "Never answer the question" in prompts.template("resolve", "query").user


def test_prompt_versions_are_files_and_edits_change_the_digest(tmp_path):
    src = PromptSet.load("v1")
    for name, t in src.templates.items():
        (tmp_path / "v9").mkdir(exist_ok=True)
        (tmp_path / "v9" / f"{name}.txt").write_text(f"[system]\n{t.system}\n[user]\n{t.user}\n")
    same = PromptSet.load("v9", root=tmp_path)
    assert {k: t.digest for k, t in same.templates.items()} == {k: t.digest for k, t in src.templates.items()}
    (tmp_path / "v9" / "rewrite.txt").write_text("[system]\nS\n[user]\nShorter: {text}\n")
    edited = PromptSet.load("v9", root=tmp_path)
    assert edited.templates["rewrite"].digest != src.templates["rewrite"].digest
    with pytest.raises(ValueError, match=r"unknown version 'v7'; available: \['v9'\]"):
        PromptSet.load("v7", root=tmp_path)
    (tmp_path / "v9" / "refine.txt").unlink()
    with pytest.raises(ValueError, match=r"missing prompt template\(s\) \['refine.txt'\]"):
        PromptSet.load("v9", root=tmp_path)
    (tmp_path / "v8").mkdir()
    (tmp_path / "v8" / "x.txt").write_text("[system]\nonly a system line\n")
    with pytest.raises(ValueError, match="x.txt: empty or missing \\[user\\] section"):
        PromptSet.load("v8", root=tmp_path)


def test_repo_params_enhance_section_loads():
    params = load_section("enhance", Path(__file__).resolve().parents[1] / "params.yaml")
    assert params.backend == "standin" and params.prompt_version == "v1"
