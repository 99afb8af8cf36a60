"""The enhancement engine on the tiny M-BEIR root with a scriptable fake backend."""

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest

from rare.config.enhance import EnhanceParams
from rare.data.input_error import DataError
from rare.data.layout import MBEIRRoot
from rare.data.records import iter_candidates, iter_jsonl, iter_queries
from rare.data.views import candidate_text
from rare.enhance.engine import FAILURES_FILE, SUMMARY_FILE, input_files
from rare.enhance.prompts import PromptSet
from rare.enhance.routing import is_question
from rare.enhance.side import EnhanceFailure, check_failures, enhance_side
from tests.fixtures.enhance import FAKE_IDENTITY, FakeBackend, image_tag

ENHANCED_KEYS = ["op", "status", "txt", "cause", "backend", "model", "prompt_version"]


def run(root, out, cache, side="corpus", backend=None, **params):
    backend = backend or FakeBackend()
    p = EnhanceParams(cache_dir=str(cache), **params)
    outcome = enhance_side(p, root, out, side, make_backend=lambda: backend, identity=FAKE_IDENTITY, progress=False)
    return outcome, backend


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def records(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in tree_bytes(folder).items() if k.endswith(".jsonl") and k != FAILURES_FILE}


def expected_op(side: str, text: str, image: str | None) -> str:
    text = text or ""
    if not image:
        return "none"
    if not text.strip():
        return "caption"
    if side == "corpus":
        return "refine"
    return "resolve" if is_question(text) else "rewrite"


@pytest.mark.parametrize("side", ["corpus", "queries"])
def test_outputs_mirror_every_input_with_originals_verbatim(tiny_root, tmp_path, side):
    outcome, _ = run(tiny_root, tmp_path / "out", tmp_path / "cache", side, shard_size=4, batch_size=3)
    files = input_files(MBEIRRoot(tiny_root), side)
    assert len(files) == (13 if side == "corpus" else 6 + 9 + 9 + 1)
    assert set(records(tmp_path / "out")) == set(files)
    assert set(tree_bytes(tmp_path / "out")) == set(files) | {SUMMARY_FILE, FAILURES_FILE}
    total = 0
    for rel in files:
        raw = [obj for _, obj in iter_jsonl(tiny_root / rel)]
        enhanced = [obj for _, obj in iter_jsonl(tmp_path / "out" / rel)]
        assert len(enhanced) == len(raw), rel
        for orig, new in zip(raw, enhanced):
            block = new.pop("enhanced")
            assert new == orig and list(new) == list(orig)  # every original field, same order, same value
            assert list(block) == ENHANCED_KEYS
            txt, img = (orig["txt"], orig["img_path"]) if side == "corpus" else (orig["query_txt"], orig["query_img_path"])
            assert block["op"] == expected_op(side, txt, img), (rel, orig)
            assert block["status"] == ("skipped" if block["op"] == "none" else "ok")
            assert (block["txt"] is None) == (block["op"] == "none")
            assert (block["backend"], block["model"], block["prompt_version"]) == ("fake", "fake-v1", "v1")
        reader = iter_candidates if side == "corpus" else iter_queries
        assert len(list(reader(tmp_path / "out" / rel))) == len(raw)  # consumers read it with the foundation
        total += len(raw)
    summary = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert summary == outcome.summary and summary["items"] == total and summary["failed"] == 0
    assert summary["files"] == {rel: sum(1 for _ in iter_jsonl(tiny_root / rel)) for rel in files}
    assert (tmp_path / "out" / FAILURES_FILE).read_bytes() == b""


def test_every_image_prompt_carries_its_image_and_instructions(tiny_root, tmp_path):
    prompts = PromptSet.load("v1")
    _, corpus = run(tiny_root, tmp_path / "c", tmp_path / "cache", "corpus")
    _, queries = run(tiny_root, tmp_path / "q", tmp_path / "cache", "queries")
    requests = corpus.requests + queries.requests
    assert {r.op for r in requests} == {"caption", "refine", "resolve", "rewrite"}
    for r in requests:
        template = prompts.template(r.op, r.side)
        assert r.system == template.system and r.instruction == template.render(r.text)
        if r.op == "rewrite":  # the paper rewrites modification text without the (contaminating) image
            assert r.image is None and r.text and r.text in r.instruction
        else:
            assert r.image is not None and r.image.is_file() and tiny_root in r.image.parents
            assert r.instruction.startswith(template.user.split("{text}")[0])
        if r.op in ("refine", "resolve"):
            assert r.text and r.text in r.instruction
        assert r.max_new_tokens == (512 if r.side == "corpus" else 128)
    by_key = {}
    for r in requests:
        assert by_key.setdefault(r.key, r) is r  # each distinct input was generated exactly once


def test_repeats_are_free_and_reruns_reuse_everything(tiny_root, tmp_path):
    first, backend = run(tiny_root, tmp_path / "out", tmp_path / "cache", shard_size=5)
    assert first.runtime["generated"] == len(backend.requests) == len({r.key for r in backend.requests})
    assert first.runtime["generated"] < first.summary["enhanceable"] / 2  # global pools repeat the local ones
    reference = tree_bytes(tmp_path / "out")

    shutil.rmtree(tmp_path / "out")  # what `dvc repro` does before rerunning a stage

    def never():
        raise AssertionError("a fully cached rerun must not even load the backend")

    p = EnhanceParams(cache_dir=str(tmp_path / "cache"), shard_size=5)
    again = enhance_side(p, tiny_root, tmp_path / "out", "corpus", make_backend=never, identity=FAKE_IDENTITY,
                         progress=False)
    assert again.runtime["generated"] == 0 and again.runtime["shards_reused"] == again.runtime["shards"]
    assert tree_bytes(tmp_path / "out") == reference

    # A new shard size re-plans every shard, but every generation comes from the item cache.
    resharded, backend3 = run(tiny_root, tmp_path / "out2", tmp_path / "cache", shard_size=3)
    assert backend3.calls == 0 and resharded.runtime["cache_hits"] > 0
    assert records(tmp_path / "out2") == records(tmp_path / "out")


def test_reruns_are_deterministic_from_scratch(tiny_root, tmp_path):
    run(tiny_root, tmp_path / "a", tmp_path / "cache_a", "queries", shard_size=2, batch_size=1)
    run(tiny_root, tmp_path / "b", tmp_path / "cache_b", "queries", shard_size=1000, batch_size=64)
    assert records(tmp_path / "a") == records(tmp_path / "b")


def test_only_changed_shards_are_regenerated(tiny_root, tmp_path):
    run(tiny_root, tmp_path / "out", tmp_path / "cache", shard_size=2)
    pool = tiny_root / "cand_pool/local/mbeir_webqa_task2_cand_pool.jsonl"
    rows = [obj for _, obj in iter_jsonl(pool)]
    rows[3]["txt"] = "a brand new passage"
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outcome, backend = run(tiny_root, tmp_path / "out", tmp_path / "cache", shard_size=2)
    assert [r.text for r in backend.requests] == ["a brand new passage"]
    assert outcome.runtime["shards"] - outcome.runtime["shards_reused"] == 1
    new = [obj for _, obj in iter_jsonl(tmp_path / "out" / pool.relative_to(tiny_root))]
    assert new[3]["enhanced"]["txt"] == f"refine of {image_tag(tiny_root / rows[3]['img_path'])}: a brand new passage"


def _set_field(path: Path, index: int, text: str, field: str = "txt") -> str:
    rows = [obj for _, obj in iter_jsonl(path)]
    rows[index][field] = text
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows[index]["did"]


def test_failures_are_recorded_with_cause_and_fall_back_to_the_original(tiny_root, tmp_path):
    pool = tiny_root / "cand_pool/local/mbeir_webqa_task2_cand_pool.jsonl"  # image,text: refine reads the text
    cues = {"EMPTY": "empty_output", "REFUSE": "refusal", "ARTEFACT": "chat_artefact",
            "CUTOFF": "over_length_cap", "BROKEN": "backend_error"}
    failing = {_set_field(pool, i, f"passage {cue} {i}"): cause for i, (cue, cause) in enumerate(cues.items())}
    rows = [obj for _, obj in iter_jsonl(pool)]
    (tiny_root / rows[5]["img_path"]).unlink()
    failing[rows[5]["did"]] = "image_unreadable"
    outside = tiny_root / "cand_pool/local/mbeir_nights_task4_cand_pool.jsonl"
    failing[_set_field(outside, 0, "../../escape.png", "img_path")] = "image_unreadable"

    outcome, _ = run(tiny_root, tmp_path / "out", tmp_path / "cache", max_failure_rate=1.0)
    out = tmp_path / "out"
    seen = {}
    for rel in [pool.relative_to(tiny_root).as_posix(), outside.relative_to(tiny_root).as_posix()]:
        for cand in iter_candidates(out / rel):
            if cand.did in failing:
                e = cand.enhanced
                assert e.status == "failed" and e.txt is None and e.cause.startswith(failing[cand.did] + ":")
                assert candidate_text(cand, use_enhanced=True, mode="append") == cand.txt  # the original survives
                seen[cand.did] = e.cause
            else:
                assert cand.enhanced.ok
    assert set(seen) == set(failing)
    # The deleted image is also used by the two global pools' copies of the entry.
    s = outcome.summary
    assert s["failures_by_cause"] == {"image_unreadable": 4, "empty_output": 1, "refusal": 1,
                                      "chat_artefact": 1, "over_length_cap": 1, "backend_error": 1}
    assert s["failed"] == 9 and s["failure_rate"] == round(9 / s["enhanceable"], 6)
    report = [obj for _, obj in iter_jsonl(out / FAILURES_FILE)]
    assert len(report) == 9
    for row in report:  # every failure names the file, the line, the record and the cause
        line = (tiny_root / row["file"]).read_text().splitlines()[row["line"] - 1]
        assert json.loads(line)["did"] == row["id"] and row["cause"] == seen[row["id"]]
    check_failures(outcome)  # 1.0 tolerates everything


def test_failure_rate_over_the_threshold_fails_loudly_after_the_report(tiny_root, tmp_path):
    out = tmp_path / "out"
    good, _ = run(tiny_root, out, tmp_path / "cache", max_failure_rate=0.005)
    check_failures(good)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    pool = tiny_root / "cand_pool/local/mbeir_webqa_task2_cand_pool.jsonl"
    _set_field(pool, 0, "REFUSE this")
    outcome, _ = run(tiny_root, out, tmp_path / "cache", max_failure_rate=0.005)
    with pytest.raises(EnhanceFailure) as exc:
        check_failures(outcome)
    msg = str(exc.value)
    assert "1 of 96 items failed (1.0% > max_failure_rate 0.5%)" in msg and "refusal: 1" in msg
    # The previous good output is untouched; the failure report is beside it, and the message says where.
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    failed = tmp_path / "out.failed"
    assert str(failed / FAILURES_FILE) in msg
    assert sorted(p.name for p in failed.iterdir()) == [FAILURES_FILE, SUMMARY_FILE]
    assert len((failed / FAILURES_FILE).read_text().splitlines()) == 1
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]

    _set_field(pool, 0, "a fine text again")
    check_failures(run(tiny_root, out, tmp_path / "cache", max_failure_rate=0.005)[0])
    assert not failed.exists()  # a stale failure report would mislead


def test_bad_input_names_file_and_line(tiny_root, tmp_path):
    pool = tiny_root / "cand_pool/local/mbeir_cirr_task7_cand_pool.jsonl"
    with pool.open("a") as fh:
        fh.write('{"did": "8:1", "txt": null}\n')
    with pytest.raises(DataError, match=r"mbeir_cirr_task7_cand_pool.jsonl:7: missing field\(s\)"):
        run(tiny_root, tmp_path / "out", tmp_path / "cache", shard_size=4)
    with pool.open("a") as fh:
        fh.write("{not json\n")
    with pytest.raises(DataError, match=r"mbeir_cirr_task7_cand_pool.jsonl:7: "):
        run(tiny_root, tmp_path / "out", tmp_path / "cache", shard_size=100)
    assert not (tmp_path / "out" / "cand_pool/local/mbeir_cirr_task7_cand_pool.jsonl").exists()


def test_writes_only_its_own_files(tiny_root, tmp_path):
    before = {k: hashlib.sha256(v).hexdigest() for k, v in tree_bytes(tiny_root).items()}
    out = tmp_path / "out"
    neighbours = {
        "notes.txt": b"mine",
        "cand_pool/local/mbeir_cirr_task7_cand_pool.jsonl.bak": b"a name containing the input's (defect 5)",
        "cand_pool/local/.mbeir_cirr_task7_cand_pool.jsonl.tmp-1-2": b"a live writer's temp",  # pid 1 is alive
    }
    for rel, data in neighbours.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    stale = out / "cand_pool/local/.mbeir_cirr_task7_cand_pool.jsonl.tmp-999999999-1"  # a killed run's temp
    stale.write_bytes(b"half")
    run(tiny_root, out, tmp_path / "cache")
    after = tree_bytes(out)
    assert all(after[rel] == data for rel, data in neighbours.items())
    assert not stale.exists()
    expected = set(input_files(MBEIRRoot(tiny_root), "corpus")) | {SUMMARY_FILE, FAILURES_FILE} | set(neighbours)
    assert set(after) == expected
    assert {k: hashlib.sha256(v).hexdigest() for k, v in tree_bytes(tiny_root).items()} == before  # inputs untouched


class Exploding(FakeBackend):
    def generate(self, requests):
        if self.calls == 1:
            self.calls += 1
            raise RuntimeError("CUDA out of memory")
        return super().generate(requests)


def test_a_backend_crash_fails_the_shard_and_a_retry_resumes_from_the_cache(tiny_root, tmp_path):
    crashing = Exploding()
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        run(tiny_root, tmp_path / "out", tmp_path / "cache", backend=crashing, shard_size=1000, batch_size=2)
    assert not (tmp_path / "out").exists()  # nothing half-written
    _, backend = run(tiny_root, tmp_path / "out", tmp_path / "cache", shard_size=1000, batch_size=2)
    _, fresh = run(tiny_root, tmp_path / "ref", tmp_path / "cache_ref", shard_size=1000, batch_size=2)
    before, after = {r.key for r in crashing.requests}, {r.key for r in backend.requests}
    assert before and not before & after  # batches finished before the crash were not redone
    assert before | after == {r.key for r in fresh.requests}
    assert records(tmp_path / "out") == records(tmp_path / "ref")


class Liar(FakeBackend):
    model = "other-model"


class Short(FakeBackend):
    def generate(self, requests):
        return super().generate(requests)[:-1]


def test_backend_contract_violations_are_errors(tiny_root, tmp_path):
    with pytest.raises(ValueError, match="backend reports fake/other-model, expected fake/fake-v1"):
        run(tiny_root, tmp_path / "out", tmp_path / "cache", backend=Liar())
    with pytest.raises(RuntimeError, match="returned 1 results for 2 requests"):
        run(tiny_root, tmp_path / "out", tmp_path / "cache", backend=Short(), batch_size=2)


def test_printed_stats_show_counts_throughput_cache_and_failures(tiny_root, tmp_path):
    from rich.console import Console

    from rare.enhance.side import print_outcome

    pool = tiny_root / "cand_pool/local/mbeir_webqa_task2_cand_pool.jsonl"
    _set_field(pool, 0, "REFUSE this")
    outcome, backend = run(tiny_root, tmp_path / "out", tmp_path / "cache", max_failure_rate=1.0)
    log = io.StringIO()  # a stage's output under DVC or Prefect: not a terminal, so rich's 80 columns
    print_outcome(outcome, Console(file=log))
    lines = log.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0] == f"enhance corpus: fake / fake-v1 / prompts {outcome.summary['prompt_version']}"
    assert any(line.startswith("│ refine") for line in lines) and any(line.startswith("│ caption") for line in lines)
    # each figure whole on its own line, never wrapped mid-line
    assert any(line.startswith(f"{outcome.summary['items']} items in ") and line.endswith(" items/s)") for line in lines)
    assert f"generated {len(backend.requests)}, cache hits {outcome.runtime['cache_hits']}, shards reused " \
           f"{outcome.runtime['shards_reused']}/{outcome.runtime['shards']}" in lines
    assert "failure rate 1.04% (refusal 1)" in lines


def test_long_texts_are_cut_in_the_prompt_only(tiny_root, tmp_path):
    pool = tiny_root / "cand_pool/local/mbeir_webqa_task2_cand_pool.jsonl"
    long_text = "word " * 400
    did = _set_field(pool, 2, long_text)
    _, backend = run(tiny_root, tmp_path / "out", tmp_path / "cache", max_text_chars=100)
    (req,) = [r for r in backend.requests if r.text.startswith("word")]
    assert req.text == long_text[:100] and req.instruction.endswith(long_text[:100])
    rows = {c.did: c for c in iter_candidates(tmp_path / "out" / pool.relative_to(tiny_root))}
    assert rows[did].txt == long_text and rows[did].enhanced.ok  # the record keeps every character
    _, again = run(tiny_root, tmp_path / "out", tmp_path / "cache", max_text_chars=200)
    assert [r.text for r in again.requests] == [long_text[:200]]  # a new cut is a new input: finished shards don't lie


def test_samples_show_each_sides_own_text_and_image_before_and_after(tiny_root, tmp_path):
    """The MLflow samples table: a query's request and image, a candidate's passage, beside the enhanced text."""
    from rare.enhance.side import samples

    for side, op_with_text in (("queries", "rewrite"), ("corpus", "refine")):
        outcome, _ = run(tiny_root, tmp_path / side, tmp_path / "cache", side=side)
        rows = samples(outcome)
        assert {row["op"] for row in rows} == set(outcome.summary["by_op"]) - {"none"}
        assert all(row["image"].startswith("mbeir_images/") for row in rows)  # every op here reads an image
        assert all(row["before"] and row["after"] for row in rows if row["op"] == op_with_text)
