import json
from pathlib import Path

import pytest

from rare.data import DataError, MBEIRRoot
from rare.data.layout import POINTER_FILE
from rare.data.qrels import read_qrels
from rare.data.records import dumps, iter_candidates, iter_queries, write_jsonl
from rare.mbeir import MBEIR_EVAL_TASKS, DatasetTask, dataset, dataset_id_of


def q(**over):
    base = {"qid": "9:1", "query_txt": None, "query_img_path": "mbeir_images/a.jpg", "query_modality": "image",
            "query_src_content": None, "pos_cand_list": ["9:7"], "neg_cand_list": [], "task_id": 3}
    base.update(over)
    return base


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_null_text_and_dict_positives(tmp_path):
    p = write_lines(tmp_path / "q.jsonl", [json.dumps(q(pos_cand_list=[{"did": "9:7"}, "6:3"]))])
    (query,) = iter_queries(p)
    assert query.txt == "" and query.pos == ["9:7", "6:3"] and query.task_id == 3


def test_errors_name_file_line_and_cause(tmp_path):
    p = write_lines(tmp_path / "q.jsonl", [json.dumps(q()), "", "{not json", json.dumps(q())])
    with pytest.raises(DataError) as exc:
        list(iter_queries(p))
    assert exc.value.line == 3 and str(exc.value).startswith(f"{p}:3: malformed JSON")

    cases = {
        "query_modality": ("picture", "'query_modality' is 'picture'; allowed"),
        "task_id": (5, "'task_id' is 5; allowed"),
        "pos_cand_list": ([], "'pos_cand_list' is empty"),
        "qid": (17, "'qid' must be a string"),
    }
    for field, (value, message) in cases.items():
        p = write_lines(tmp_path / f"{field}.jsonl", [json.dumps(q(**{field: value}))])
        with pytest.raises(DataError, match=message):
            list(iter_queries(p))
    p = write_lines(tmp_path / "extra.jsonl", [json.dumps({**q(), "colour": 1})])
    with pytest.raises(DataError, match=r"unexpected field\(s\) \['colour'\]"):
        list(iter_queries(p))
    bad = q()
    del bad["neg_cand_list"]
    p = write_lines(tmp_path / "missing.jsonl", [json.dumps(bad)])
    with pytest.raises(DataError, match=r"missing field\(s\) \['neg_cand_list'\]"):
        list(iter_queries(p))


def test_candidate_image_modality_needs_image(tmp_path):
    p = write_lines(tmp_path / "c.jsonl", [json.dumps(
        {"did": "1:2", "txt": "x", "img_path": None, "modality": "image,text", "src_content": None})])
    with pytest.raises(DataError, match="there is no image path"):
        list(iter_candidates(p))


def test_enhanced_block_round_trips(tmp_path):
    rec = {"did": "1:2", "txt": "passage", "img_path": "mbeir_images/x.png", "modality": "image,text",
           "src_content": None, "enhanced": {"op": "refine", "status": "ok", "txt": "a red car", "cause": None,
                                              "backend": "standin", "model": "m", "prompt_version": "refine@v1"}}
    p = tmp_path / "c.jsonl"
    write_jsonl(p, [rec])
    (cand,) = iter_candidates(p)
    assert cand.txt == "passage" and cand.enhanced.ok and cand.enhanced.txt == "a red car"
    assert p.read_text() == dumps(rec) + "\n"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temp file


def test_qrels_reader(tmp_path):
    p = write_lines(tmp_path / "r.txt", ["5:1 0 5:9 1 6", "5:1 0 6:4 1 6", "", "5:2 0 5:8 1 6"])
    assert read_qrels(p) == {"5:1": {"5:9", "6:4"}, "5:2": {"5:8"}}
    p = write_lines(tmp_path / "bad.txt", ["5:1 0 5:9 1"])
    with pytest.raises(DataError, match=r"bad.txt:1: expected 5 space-separated columns"):
        read_qrels(p)


def test_registry_and_ids():
    assert len(MBEIR_EVAL_TASKS) == 16
    assert [dt.name for dt in MBEIR_EVAL_TASKS if dt.headline_k == 10] == [
        "fashion200k_task0", "fashion200k_task3", "fashioniq_task7"]
    assert DatasetTask.parse("fashioniq_task7").ks == (10, 20, 50)
    assert DatasetTask.parse("cirr_task7").ks == (1, 5, 10)
    assert dataset(8).name == "cirr" and dataset("oven").id == 5
    assert dataset_id_of("6:123") == 6
    with pytest.raises(KeyError, match="known"):
        dataset("coco")
    with pytest.raises(ValueError):
        dataset_id_of("abc")


def test_layout_discovers_tasks_and_mscoco_test_pool(tiny_root_session):
    root = MBEIRRoot(tiny_root_session)
    names = [dt.name for dt in root.eval_tasks("test")]
    assert names == ["mscoco_task0", "webqa_task1", "webqa_task2", "mscoco_task3", "nights_task4",
                     "oven_task6", "infoseek_task6", "cirr_task7", "oven_task8"]
    assert root.local_pool(DatasetTask("mscoco", 0)).name == "mbeir_mscoco_task0_test_cand_pool.jsonl"
    assert root.local_pool(DatasetTask("mscoco", 0), "val").name == "mbeir_mscoco_task0_cand_pool.jsonl"
    assert root.local_pool(DatasetTask("cirr", 7)).name == "mbeir_cirr_task7_cand_pool.jsonl"
    assert root.global_pool("train").exists() and root.union_train_file.exists()


def test_pointer_root(tmp_path, tiny_root_session):
    (tmp_path / POINTER_FILE).write_text(json.dumps({"root": str(tiny_root_session)}))
    assert MBEIRRoot.open(tmp_path).path == tiny_root_session
    assert MBEIRRoot.open(tiny_root_session).path == tiny_root_session
