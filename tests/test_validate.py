"""`rare validate` catches every planted defect, names file:line and cause, and keeps going."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rare.cli import app
from rare.validate import validate_root

TEST_Q = "query/test/mbeir_cirr_task7_test.jsonl"
POOL = "cand_pool/local/mbeir_cirr_task7_cand_pool.jsonl"


def edit_line(path: Path, lineno: int, fn) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


def edit_record(path: Path, lineno: int, fn) -> None:
    def change(line: str) -> str:
        rec = json.loads(line)
        fn(rec)
        return json.dumps(rec)

    edit_line(path, lineno, change)


def errors(root: Path) -> list[str]:
    return [str(p) for p in validate_root(root).errors]


def test_clean_root_passes_with_cross_dataset_warning(tiny_root_session):
    report = validate_root(tiny_root_session)
    assert report.errors == []
    assert [p.cause for p in report.warnings] == [
        "cross-dataset positive '6:999001' of '5:52' is unreachable in the local pool"]
    assert report.counts["queries"] > 100 and report.counts["images"] > 50


def test_malformed_json(tiny_root):
    edit_line(tiny_root / TEST_Q, 2, lambda line: line[:-5])
    errs = errors(tiny_root)
    assert f"{TEST_Q}:2: malformed JSON" in errs[0]
    assert any("mbeir_cirr_task7_test_qrels.txt:2: qid" in e and "is not in" in e for e in errs)  # knock-on


@pytest.mark.parametrize("change, cause", [
    (lambda r: r.pop("neg_cand_list"), "missing field(s) ['neg_cand_list']"),
    (lambda r: r.update(colour="red"), "unexpected field(s) ['colour']"),
    (lambda r: r.update(query_modality="image+text"), "'query_modality' is 'image+text'; allowed"),
])
def test_fields_and_modality(tiny_root, change, cause):
    edit_record(tiny_root / TEST_Q, 1, change)
    errs = errors(tiny_root)
    assert any(f"{TEST_Q}:1: {cause}" in e for e in errs), errs


def test_modality_disagreeing_with_task(tiny_root):
    edit_record(tiny_root / TEST_Q, 1, lambda r: r.update(query_modality="image"))
    assert any("does not match task 7 ('image,text')" in e for e in errors(tiny_root))


def test_duplicate_ids(tiny_root):
    path = tiny_root / POOL
    first_did = json.loads(path.read_text().splitlines()[0])["did"]
    edit_record(path, 3, lambda r: r.update(did=first_did))
    errs = errors(tiny_root)
    assert any(f"{POOL}:3: duplicate did '{first_did}'" in e for e in errs), errs
    qpath = tiny_root / TEST_Q
    first_qid = json.loads(qpath.read_text().splitlines()[0])["qid"]
    edit_record(qpath, 2, lambda r: r.update(qid=first_qid))
    assert any(f"{TEST_Q}:2: duplicate qid '{first_qid}' (first on line 1)" in e for e in errors(tiny_root))


def test_positive_in_no_pool(tiny_root):
    edit_record(tiny_root / TEST_Q, 2, lambda r: r.update(pos_cand_list=["8:424242"]))
    errs = errors(tiny_root)
    assert any(f"{TEST_Q}:2: positive '8:424242' of" in e and "is in no candidate pool" in e for e in errs), errs


def test_qrels_disagree(tiny_root):
    qrels = tiny_root / "qrels/test/mbeir_cirr_task7_test_qrels.txt"
    edit_line(qrels, 1, lambda line: line.replace(line.split()[2], "8:1", 1))
    errs = errors(tiny_root)
    assert any(f"{TEST_Q}:1: pos_cand_list of" in e and "disagrees with mbeir_cirr_task7_test_qrels.txt" in e
               and "only in qrels ['8:1']" in e for e in errs), errs
    edit_line(qrels, 2, lambda line: "only four columns here")
    assert any("mbeir_cirr_task7_test_qrels.txt:2: expected 5 space-separated columns" in e for e in errors(tiny_root))


def test_missing_and_unreadable_images(tiny_root):
    rec = json.loads((tiny_root / TEST_Q).read_text().splitlines()[0])
    (tiny_root / rec["query_img_path"]).unlink()
    cand = json.loads((tiny_root / POOL).read_text().splitlines()[1])
    (tiny_root / cand["img_path"]).write_bytes(b"\x89PNG garbage")
    errs = errors(tiny_root)
    assert any(f"{TEST_Q}:1: image '{rec['query_img_path']}'" in e and "image file not found" in e for e in errs), errs
    # reported once, at its first reference (the global pool, which repeats the local entries)
    bad = [e for e in errs if f"image '{cand['img_path']}'" in e]
    assert len(bad) == 1 and "unreadable or corrupt" in bad[0] and "mbeir_union_test_cand_pool.jsonl:" in bad[0]


def test_paths_escaping_root(tiny_root):
    edit_record(tiny_root / TEST_Q, 1, lambda r: r.update(query_img_path="../../etc/passwd"))
    edit_record(tiny_root / TEST_Q, 2, lambda r: r.update(query_img_path="/etc/passwd"))
    errs = errors(tiny_root)
    assert any(f"{TEST_Q}:1:" in e and "escapes the data root" in e for e in errs), errs
    assert any(f"{TEST_Q}:2:" in e and "must be relative to the data root" in e for e in errs), errs


def test_empty_pool(tiny_root):
    (tiny_root / POOL).write_text("")
    errs = errors(tiny_root)
    assert f"error: {tiny_root / POOL}: candidate pool is empty" in errs
    assert any("is missing from its local pool" in e for e in errs)  # its queries' positives are gone too


def test_reports_everything_at_once_and_cli_exit_code(tiny_root):
    edit_line(tiny_root / TEST_Q, 2, lambda line: "{oops")
    edit_record(tiny_root / POOL, 1, lambda r: r.update(modality="video"))
    (tiny_root / "instructions/query_instructions.tsv").unlink()
    errs = errors(tiny_root)
    assert any(f"{TEST_Q}:2: malformed JSON" in e for e in errs)
    assert any(f"{POOL}:1: 'modality' is 'video'" in e for e in errs)
    assert any("instructions TSV is missing" in e for e in errs)
    result = CliRunner().invoke(app, ["validate", str(tiny_root)])
    assert result.exit_code == 1
    assert "malformed JSON" in result.output and "FAILED" in result.output


def test_cli_passes_clean_root(tiny_root_session):
    result = CliRunner().invoke(app, ["validate", str(tiny_root_session)])
    assert result.exit_code == 0, result.output
    assert "OK: 0 error(s), 1 warning(s)" in result.output
