"""The embedded benchmark: M-BEIR layout, every task type, valid, deterministic, and designed as documented."""

import json
import re
from collections import Counter

import pytest
from PIL import Image

from rare.benchmark.generate import build_datasets, generate
from rare.benchmark.render import render_all
from rare.benchmark.scene import sample_scene
from rare.config import ConfigError, load_section
from rare.config.data import PRESETS, BenchmarkSizes, DataParams
from rare.data.instructions import InstructionTable
from rare.data.layout import MBEIRRoot
from rare.data.qrels import read_qrels
from rare.data.records import iter_candidates, iter_queries
from rare.mbeir import DatasetTask, dataset
from rare.validate import validate_root
from tests.fixtures.benchmark import make_tiny_benchmark
from tests.fixtures.benchmark import tree_bytes as files

EVAL_TASKS = ["glyphcaps_task0", "factwiki_task1", "factwiki_task2", "glyphcaps_task3", "twinpix_task4",
              "emblemkb_task6", "tweakset_task7", "emblemkb_task8"]
DATASETS = ["glyphcaps", "factwiki", "twinpix", "emblemkb", "tweakset"]
QUESTION = re.compile(r"^\s*(what|where|why|when|which|how)\b", re.IGNORECASE)


def annotation(src: str) -> dict:
    return json.loads(src)


def queries(root: MBEIRRoot, split: str, name: str):
    dt = DatasetTask.parse(name)
    return list(iter_queries(root.query_file(split, dt.dataset, dt.task_id)))


def pool(root: MBEIRRoot, name: str):
    return {c.did: c for c in iter_candidates(root.local_pool(DatasetTask.parse(name)))}


# ------------------------------------------------------------------ layout and validity
def test_layout_covers_every_task_type_in_mbeir_file_names(tiny_benchmark_root):  # noqa: F811
    root = MBEIRRoot(tiny_benchmark_root)
    assert [dt.name for dt in root.eval_tasks("test")] == EVAL_TASKS
    assert [dt.name for dt in root.eval_tasks("val")] == EVAL_TASKS
    assert {DatasetTask.parse(n).task_id for n in EVAL_TASKS} == {0, 1, 2, 3, 4, 6, 7, 8}
    for name in EVAL_TASKS:
        dt = DatasetTask.parse(name)
        for path in (root.local_pool(dt), root.qrels_file("test", dt), root.qrels_file("val", dt)):
            assert path.is_file(), path
        assert root.local_pool(dt).name == f"mbeir_{name}_cand_pool.jsonl"
    assert [p.name for p in root.train_files()] == sorted(f"mbeir_{d}_train.jsonl" for d in DATASETS)
    for d in DATASETS:
        assert root.qrels_file("train", d).is_file()
        assert (root.images_dir / f"{d}_images").is_dir()
    for path in (root.union_train_file, root.global_pool("test"), root.global_pool("train"), root.instructions_file):
        assert path.is_file(), path


def test_validate_passes_with_zero_errors_and_zero_warnings(tiny_benchmark_root):  # noqa: F811
    report = validate_root(tiny_benchmark_root)
    assert report.errors == [] and report.warnings == []
    manifest = json.loads((tiny_benchmark_root / "benchmark.json").read_text())
    assert report.counts["images"] == manifest["counts"]["images"]


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    a = files(make_tiny_benchmark(tmp_path / "a", seed=7))
    b = files(make_tiny_benchmark(tmp_path / "b", seed=7))
    c = files(make_tiny_benchmark(tmp_path / "c", seed=8))
    assert len(a) > 300 and list(a) == list(b)
    assert [k for k in a if a[k] != b[k]] == []
    changed = [k for k in a if k in c and a[k] != c[k]]
    assert all(any(k.endswith(f"mbeir_{n}_test.jsonl") for k in changed) for n in EVAL_TASKS)
    assert any(k.endswith(".png") for k in changed) and a["cand_pool/global/mbeir_union_test_cand_pool.jsonl"] != \
        c["cand_pool/global/mbeir_union_test_cand_pool.jsonl"]


@pytest.mark.slow
def test_rendering_in_worker_processes_gives_the_same_bytes(tmp_path, monkeypatch):
    import random

    from rare.benchmark import render

    monkeypatch.setattr(render, "PARALLEL_MIN_JOBS", 10)
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(300)]
    for workers in (1, 2):
        render_all([(tmp_path / str(workers) / f"{i}.png", s) for i, s in enumerate(scenes)], 32, workers)
    assert files(tmp_path / "1") == files(tmp_path / "2")


def test_qrels_agree_with_positives_and_every_positive_is_in_its_pool(tiny_benchmark_root):  # noqa: F811
    root = MBEIRRoot(tiny_benchmark_root)
    global_test = [c.did for c in iter_candidates(root.global_pool("test"))]
    train_pool = {c.did for c in iter_candidates(root.global_pool("train"))}
    locals_ = [pool(root, n) for n in EVAL_TASKS]
    assert sorted(global_test) == sorted(d for p in locals_ for d in p)  # union of disjoint local pools
    assert len(set(global_test)) == len(global_test)
    for name, local in zip(EVAL_TASKS, locals_):
        dt = DatasetTask.parse(name)
        for split in ("val", "test"):
            qs = queries(root, split, name)
            assert qs and read_qrels(root.qrels_file(split, dt)) == {q.qid: set(q.pos) for q in qs}
            assert all(d in local for q in qs for d in q.pos)
            assert all(q.task_id == dt.task_id and q.qid.startswith(f"{dataset(dt.dataset).id}:") for q in qs)
    union = list(iter_queries(root.union_train_file))
    for d in DATASETS:
        train = list(iter_queries(root.query_file("train", d)))
        assert read_qrels(root.qrels_file("train", d)) == {q.qid: set(q.pos) for q in train}
        assert all(p in train_pool for q in train for p in q.pos)
    assert len(union) == sum(len(list(iter_queries(f))) for f in root.train_files())
    all_qids = [q.qid for f in (root.path / "query").rglob("*.jsonl") if "union" not in str(f) for q in iter_queries(f)]
    assert len(all_qids) == len(set(all_qids))


def test_images_are_rgb_pngs_of_the_configured_size_and_none_is_orphaned(tiny_benchmark_root):  # noqa: F811
    referenced = set()
    for f in (tiny_benchmark_root / "query").rglob("*.jsonl"):
        referenced |= {q.img_path for q in iter_queries(f) if q.img_path}
    for f in (tiny_benchmark_root / "cand_pool").rglob("*.jsonl"):
        referenced |= {c.img_path for c in iter_candidates(f) if c.img_path}
    on_disk = {str(p.relative_to(tiny_benchmark_root)) for p in (tiny_benchmark_root / "mbeir_images").rglob("*.png")}
    assert referenced == on_disk
    for rel in sorted(on_disk)[::25]:
        with Image.open(tiny_benchmark_root / rel) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (64, 64))


def test_instruction_tsv_has_four_prompts_per_group_in_the_real_column_format(tiny_benchmark_root):  # noqa: F811
    path = MBEIRRoot(tiny_benchmark_root).instructions_file
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert rows[0][:4] == ["query_modality", "cand_modality", "dataset", "dataset_id"]
    assert len(rows) == 9 and all(len(r) == 8 and all(r) for r in rows)
    table = InstructionTable.load(path)
    assert set(table.prompts) == {(13, "image,text", "image,text"), (13, "image,text", "text"), (10, "text", "image"),
                                  (10, "image", "text"), (11, "text", "text"), (11, "text", "image,text"),
                                  (12, "image", "image"), (14, "image,text", "image")}
    assert table.names[14] == "tweakset"


# --------------------------------------------------------------------------- sizes
def test_sizes_follow_explicit_overrides_and_the_manifest_counts_the_files(tmp_path):
    params = DataParams(sizes=BenchmarkSizes(train=5, val=2, test=3, pool=20))
    manifest = generate(tmp_path / "r", params)
    root = MBEIRRoot(tmp_path / "r")
    for name in EVAL_TASKS:
        row = manifest["counts"]["dataset_tasks"][name]
        assert (row["test"], row["val"]) == (3, 2) == (len(queries(root, "test", name)), len(queries(root, "val", name)))
        assert row["pool"] == len(pool(root, name)) >= 20
    for d in DATASETS:
        n_tasks = sum(n.startswith(d) for n in EVAL_TASKS)
        assert manifest["counts"]["train_queries"][d] == 5 * n_tasks == len(list(iter_queries(root.query_file("train", d))))
    assert manifest["sizes"] == {"train": 5, "val": 2, "test": 3, "pool": 20} and manifest["seed"] == 0


def test_default_preset_fits_the_pipeline_budget():
    builds = build_datasets(DataParams())
    pools = {f"{b.name}_task{t}": len(p) for b in builds for t, p in b.pools.items()}
    test = {f"{b.name}_task{t}": len(q) for b in builds for (s, t), q in b.queries.items() if s == "test"}
    train = sum(len(q) for b in builds for (s, _), q in b.queries.items() if s == "train")
    images = sum(len(b.images) for b in builds)
    assert set(test.values()) == {300} and train == 4800
    assert all(500 <= n <= 3000 for n in pools.values()) and 8000 <= sum(pools.values()) <= 9500
    assert images < 13_000


def test_presets_and_bad_values_are_rejected_by_name(tmp_path):
    assert DataParams().resolved_sizes == PRESETS["default"]
    assert DataParams(preset="large").resolved_sizes.pool * 8 >= 100_000
    bad = tmp_path / "p.yaml"
    bad.write_text("data:\n  preset: huge\n")
    with pytest.raises(ConfigError, match=r"data\.preset.*'tiny', 'default' or 'large'"):
        load_section("data", bad)
    bad.write_text("data:\n  sizes: {train: 5, val: 2, test: 0, pool: 9}\n")
    with pytest.raises(ConfigError, match=r"data\.sizes\.test"):
        load_section("data", bad)


# ------------------------------------------------------------------------ design
def test_every_image_carries_its_annotation_in_src_content(tiny_benchmark_root):  # noqa: F811
    root = MBEIRRoot(tiny_benchmark_root)
    n = 0
    for f in root.local_pools() + [root.global_pool("train")]:
        for c in iter_candidates(f):
            ann = annotation(c.src_content)
            assert ann["schema"] == "rare-bench/1"
            if "union" not in f.name:
                assert ann["dataset"] == f.name.split("_")[1]
            if c.img_path:
                image = ann["image"]
                assert image["objects"] or image["entity"]
                n += 1
    for f in (root.path / "query").rglob("*.jsonl"):
        for q in iter_queries(f):
            assert ("image" in annotation(q.src_content)) == bool(q.img_path)
    assert n > 150


def test_glyphcaps_captions_name_colours_and_shapes_only_and_are_unique_per_pool(tiny_benchmark_root):  # noqa: F811
    root = MBEIRRoot(tiny_benchmark_root)
    t0 = pool(root, "glyphcaps_task0")
    for q in queries(root, "test", "glyphcaps_task0"):
        image = annotation(t0[q.pos[0]].src_content)["image"]
        text = q.txt.lower()
        assert all(o["color"] in text and o["shape"] in text for o in image["objects"])
        hidden = [w["text"].lower() for w in image["words"]] + ["small", "large", "left", "right", "top", "bottom"]
        assert not any(re.search(rf"\b{h}\b", text) for h in hidden), text
    objects = re.compile(r"\b(?:(two|three) )?(\w+) (circle|square|triangle|star|hexagon|cross)")
    keys = [tuple(sorted(objects.findall(c.txt.lower()))) for c in pool(root, "glyphcaps_task3").values()]
    assert all(keys) and len(set(keys)) == len(keys)


def test_emblemkb_questions_hide_the_entity_and_unseen_entities_never_train(tiny_benchmark_root):  # noqa: F811
    root = MBEIRRoot(tiny_benchmark_root)
    trained = {annotation(q.src_content)["image"]["entity"]["name"]
               for q in iter_queries(root.query_file("train", "emblemkb"))}
    for name in ("emblemkb_task6", "emblemkb_task8"):
        cands = pool(root, name)
        evals = queries(root, "test", name) + queries(root, "val", name)
        unseen = 0
        for q in evals:
            ann = annotation(q.src_content)
            entity = ann["image"]["entity"]["name"]
            assert q.txt.endswith("?") and entity.lower() not in q.txt.lower()
            assert ann["entity_seen"] == (entity in trained)
            unseen += not ann["entity_seen"]
            passage = cands[q.pos[0]].txt
            assert entity in passage and ann["answer"] in passage and "emblem" not in passage.lower()
        assert unseen == round(0.5 * len(evals))


def _apply(objects: list[dict], edits: list[dict]) -> Counter:
    objs = {o["shape"]: dict(o) for o in objects}
    for e in edits:
        if e["op"] == "recolor":
            objs[e["shape"]]["color"] = e["to"]
        elif e["op"] == "resize":
            objs[e["shape"]]["size"] = e["to"]
        elif e["op"] == "remove":
            del objs[e["shape"]]
        elif e["op"] == "add":
            objs[e["shape"]] = {"shape": e["shape"], "color": e["color"], "size": e["size"]}
        else:
            old = objs.pop(e["from"])
            objs[e["to"]] = {**old, "shape": e["to"]}
    return Counter((o["shape"], o["color"], o["size"]) for o in objs.values())


def test_tweakset_targets_apply_the_edit_and_partial_edits_are_in_the_pool(tiny_benchmark_root):  # noqa: F811
    root = MBEIRRoot(tiny_benchmark_root)
    cands = pool(root, "tweakset_task7")
    layouts = [_apply(annotation(c.src_content)["image"]["objects"], []) for c in cands.values()]
    partial_found = 0
    for q in queries(root, "test", "tweakset_task7") + queries(root, "val", "tweakset_task7"):
        assert not q.txt.endswith("?") and not QUESTION.match(q.txt)
        ann = annotation(q.src_content)
        target = _apply(annotation(cands[q.pos[0]].src_content)["image"]["objects"], [])
        assert _apply(ann["image"]["objects"], ann["edit"]) == target
        assert _apply(ann["image"]["objects"], []) in layouts  # the reference itself is a hard negative
        if len(ann["edit"]) >= 2:
            partial = _apply(ann["image"]["objects"], ann["edit"][:1])
            assert partial in layouts and partial != target
            partial_found += 1
    assert partial_found > 0


def test_twinpix_positives_hide_among_caption_identical_lookalikes(tiny_benchmark_root):  # noqa: F811
    root = MBEIRRoot(tiny_benchmark_root)
    cands = pool(root, "twinpix_task4")
    images = Counter(json.dumps(annotation(c.src_content)["image"], sort_keys=True) for c in cands.values())
    for q in queries(root, "test", "twinpix_task4"):
        ref = annotation(q.src_content)["image"]
        pos = annotation(cands[q.pos[0]].src_content)["image"]
        assert pos == ref
        assert images[json.dumps(pos, sort_keys=True)] >= 7  # the positive + 6 negatives a caption cannot separate
