"""The engine with the real offline stand-in, on the tiny embedded benchmark (and off it)."""

import json
import shutil

import pytest

from rare.config.enhance import EnhanceParams
from rare.data.records import iter_candidates, iter_jsonl
from rare.enhance.side import EnhanceFailure, check_failures, enhance_side, samples


def run(root, out, cache, side, **params):
    return enhance_side(EnhanceParams(cache_dir=str(cache), **params), root, out, side, progress=False)


def test_standin_enhances_every_benchmark_item(tiny_benchmark_root, tmp_path):  # noqa: F811
    corpus = run(tiny_benchmark_root, tmp_path / "c", tmp_path / "cache", "corpus")
    queries = run(tiny_benchmark_root, tmp_path / "q", tmp_path / "cache", "queries")
    assert corpus.summary["failed"] == queries.summary["failed"] == 0
    assert set(corpus.summary["by_op"]) == {"caption", "refine", "none"}
    assert set(queries.summary["by_op"]) == {"caption", "resolve", "rewrite", "none"}
    assert corpus.summary["model"].startswith("rare-standin-")
    check_failures(corpus)
    check_failures(queries)
    # The samples a reader checks first show each side's own text and image fields, before and after.
    for outcome in (corpus, queries):
        rows = samples(outcome, per_op=2)
        assert {r["op"] for r in rows} == set(outcome.summary["by_op"]) - {"none"}
        assert all(r["before"] and r["after"] for r in rows if r["op"] != "caption"), rows
        assert all(r["image"] for r in rows), rows


def test_the_annotation_is_part_of_the_standin_input(tiny_benchmark_root, tmp_path):  # noqa: F811
    root = shutil.copytree(tiny_benchmark_root, tmp_path / "root")
    pool = root / "cand_pool/local/mbeir_glyphcaps_task0_cand_pool.jsonl"  # image-only candidates
    run(root, tmp_path / "out", tmp_path / "cache", "corpus")
    before = {c.did: c.enhanced.txt for c in iter_candidates(tmp_path / "out" / pool.relative_to(root))}
    rows = [obj for _, obj in iter_jsonl(pool)]
    rows[0]["src_content"], rows[1]["src_content"] = rows[1]["src_content"], rows[0]["src_content"]
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = run(root, tmp_path / "out", tmp_path / "cache", "corpus")
    after = {c.did: c.enhanced.txt for c in iter_candidates(tmp_path / "out" / pool.relative_to(root))}
    assert before[rows[0]["did"]] != before[rows[1]["did"]]
    assert (after[rows[0]["did"]], after[rows[1]["did"]]) == (before[rows[1]["did"]], before[rows[0]["did"]])
    assert again.runtime["generated"] == 2  # same images, new annotations: only those two are regenerated


def test_standin_on_data_without_annotations_fails_loudly(tiny_root, tmp_path):
    outcome = run(tiny_root, tmp_path / "out", tmp_path / "cache", "corpus")
    s = outcome.summary
    assert s["ok"] == 0 and s["failed"] == s["enhanceable"] > 0 and list(s["failures_by_cause"]) == ["stand_in"]
    with pytest.raises(EnhanceFailure, match="100.0% > max_failure_rate 5.0%"):
        check_failures(outcome)


def test_cost_records_add_up_to_the_stage_totals(tiny_benchmark_root, tmp_path):  # noqa: F811
    from rare.enhance.side import costs_file, write_enhance_metrics
    from rare.report.costs import cost_lines, per_op, read_costs

    outcome = run(tiny_benchmark_root, tmp_path / "c", tmp_path / "cache", "corpus")
    s = outcome.summary
    enhanced = [c for c in outcome.costs if c.op != "none"]
    assert len(enhanced) == s["ok"] + s["failed"]
    assert sum(c.tokens_in for c in enhanced) == s["tokens_in"] > 0
    assert sum(c.tokens_out for c in enhanced) == s["tokens_out"] > 0
    for op, statuses in s["by_op"].items():
        if op != "none":
            assert sum(c.op == op for c in outcome.costs) == sum(statuses.values())
    generated = [c for c in enhanced if not c.cached]
    assert len(generated) == outcome.runtime["generated"]
    assert 0 < sum(c.seconds for c in generated) <= outcome.runtime["seconds"]
    write_enhance_metrics(outcome, tmp_path / "m" / "enhance_corpus.json")
    ops = per_op("corpus", read_costs(costs_file(tmp_path / "m" / "enhance_corpus.json")))
    assert sum(o.tokens_in for o in ops) == s["tokens_in"] and sum(o.items for o in ops) == len(outcome.costs)
    assert any(line.startswith("| corpus | caption |") for line in cost_lines(tmp_path / "m" / "runtime"))
    assert not any(c.reused for c in outcome.costs)


@pytest.mark.parametrize("side", ["corpus", "queries"])
def test_a_fully_cached_rerun_reports_the_costs_as_recorded_when_generated(tiny_benchmark_root, tmp_path, side):  # noqa: F811
    from dataclasses import replace

    from rare.enhance.side import costs_file, write_enhance_metrics
    from rare.report.costs import cost_lines

    first = run(tiny_benchmark_root, tmp_path / "o1", tmp_path / "cache", side)
    again = run(tiny_benchmark_root, tmp_path / "o2", tmp_path / "cache", side)
    assert first.runtime["generated"] > 0 and again.runtime["generated"] == 0
    assert again.runtime["shards_reused"] == again.runtime["shards"] > 0
    # the same records, field by field, only marked as read back from the stored shards
    assert all(c.reused for c in again.costs) and not any(c.reused for c in first.costs)
    assert [replace(c, reused=False) for c in again.costs] == first.costs
    for outcome in (first, again):  # and both still add up to the (deterministic) stage totals
        enhanced = [c for c in outcome.costs if c.op != "none"]
        assert len(enhanced) == outcome.summary["ok"] + outcome.summary["failed"]
        assert sum(c.tokens_in for c in enhanced) == outcome.summary["tokens_in"] > 0
        assert sum(c.tokens_out for c in enhanced) == outcome.summary["tokens_out"] > 0
        assert sum(not c.cached for c in enhanced) == first.runtime["generated"]
    assert sum(c.seconds for c in again.costs) == sum(c.seconds for c in first.costs) > 0
    for name, outcome in (("m1", first), ("m2", again)):
        write_enhance_metrics(outcome, tmp_path / name / f"enhance_{side}.json")
    table = cost_lines(tmp_path / "m1" / "runtime")
    assert table and table == cost_lines(tmp_path / "m2" / "runtime")
    assert costs_file(tmp_path / "m2" / f"enhance_{side}.json").read_bytes().count(b"\n") == len(first.costs)
