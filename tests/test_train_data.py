"""Training data: exact text per variant, identical batches across variants, the sampler, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rare.config.train import TrainParams
from rare.data.input_error import DataError
from rare.data.instructions import InstructionTable
from rare.data.layout import MBEIRRoot
from rare.data.records import iter_jsonl
from rare.mbeir import TASKS, dataset_id_of
from rare.train.datamodule import EpochBatchSampler, PairDataModule, TextSettings, resolve_inputs
from tests.fixtures.tiny_root import make_tiny_root

FAILED_QID_SUFFIX = "3"  # queries whose qid ends in 3 carry a failed enhancement: they must fall back


def _enh(op: str, status: str, txt: str | None) -> dict:
    return {"op": op, "status": status, "txt": txt, "cause": None if status != "failed" else "empty output",
            "backend": "test", "model": "test", "prompt_version": "v1"}


def _mirror(raw: Path, out: Path, pattern: str, enhance) -> None:  # noqa: ANN001
    for f in sorted(raw.glob(pattern)):
        rows = [{**obj, "enhanced": enhance(obj)} for _, obj in iter_jsonl(f)]
        target = out / f.relative_to(raw)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _query_enh(q: dict) -> dict:
    if not q["query_img_path"]:
        return _enh("none", "skipped", None)
    if q["qid"].endswith(FAILED_QID_SUFFIX):
        return _enh("rewrite", "failed", None)
    return _enh("rewrite", "ok", f"concise {q['qid']}")


def _cand_enh(c: dict) -> dict:
    if not c["img_path"]:
        return _enh("none", "skipped", None)
    return _enh("caption", "ok", f"caption of {c['did']}")


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("variants")
    raw = make_tiny_root(base / "raw")
    _mirror(raw, base / "enh_corpus", "cand_pool/**/*.jsonl", _cand_enh)
    _mirror(raw, base / "enh_queries", "query/**/*.jsonl", _query_enh)
    return raw, base / "enh_corpus", base / "enh_queries"


def _datamodule(raw: Path, corpus: Path | None, queries: Path | None, variant: str, tmp: Path,
                **kw) -> PairDataModule:
    from rare.model.preprocess import Collator

    params = TrainParams(cache_dir=str(tmp / "cache"), batch_size=4, num_workers=0, **kw)
    root = MBEIRRoot(raw)
    use_corpus, use_query = {"none": (0, 0), "corpus": (1, 0), "query": (0, 1), "both": (1, 1)}[variant]
    # as `rare train` hands them: only the enhanced folders the variant reads
    inputs = resolve_inputs(root, params, corpus if use_corpus else None, queries if use_query else None)
    text = TextSettings(bool(use_query), bool(use_corpus), params.text_mode.query, params.text_mode.corpus,
                        params.instruction_seed, params.seed)
    dm = PairDataModule(root, inputs, text, params, Collator(None, 8, 8, (0, 0, 0), (1, 1, 1)))
    dm.setup()
    return dm


def _expected(raw: Path, variant: str, qrow: dict, cand: dict, table: InstructionTable) -> tuple[str, str]:
    """By hand: corpus mode prepend, query mode replace (the defaults), instruction before the query text."""
    enh_corpus, enh_query = variant in ("corpus", "both"), variant in ("query", "both")
    instruction = table.choose(qrow["qid"], dataset_id_of(qrow["qid"]), qrow["query_modality"],
                               TASKS[qrow["task_id"]][1], seed=0)
    q_body = qrow["query_txt"] or ""
    if enh_query and qrow["query_img_path"] and not qrow["qid"].endswith(FAILED_QID_SUFFIX):
        q_body = f"concise {qrow['qid']}"
    c_text = cand["txt"] or ""
    if enh_corpus and cand["img_path"]:
        c_text = f"Visual context: caption of {cand['did']}. {c_text}" if c_text else f"caption of {cand['did']}"
    return (f"{instruction} {q_body}" if q_body else instruction), c_text


@pytest.mark.parametrize("variant", ["none", "corpus", "query", "both"])
def test_variant_text_selection_is_exact(roots: tuple[Path, Path, Path], tmp_path: Path, variant: str) -> None:
    raw, enh_c, enh_q = roots
    dm = _datamodule(raw, enh_c, enh_q, variant, tmp_path)
    table = InstructionTable.load(raw / "instructions/query_instructions.tsv")
    queries = [obj for _, obj in iter_jsonl(raw / "query/union_train/mbeir_union_up_train.jsonl")]
    pool = {obj["did"]: obj for _, obj in iter_jsonl(raw / "cand_pool/global/mbeir_union_train_cand_pool.jsonl")}
    assert len(dm.train_set) == len(queries)
    checked = {"enhanced_query": 0, "fallback_query": 0, "prepended_cand": 0, "caption_only_cand": 0}
    for i, qrow in enumerate(queries):
        pair = dm.train_set.pair(i, epoch=0)
        cand = pool[pair.did]
        assert pair.qid == qrow["qid"] and pair.did == qrow["pos_cand_list"][0]
        assert (pair.query_text, pair.cand_text) == _expected(raw, variant, qrow, cand, table)
        assert pair.query_image == qrow["query_img_path"] and pair.cand_image == cand["img_path"]
        if qrow["query_img_path"] and qrow["query_txt"]:
            checked["fallback_query" if qrow["qid"].endswith(FAILED_QID_SUFFIX) else "enhanced_query"] += 1
        if cand["img_path"]:
            checked["prepended_cand" if cand["txt"] else "caption_only_cand"] += 1
    assert all(n > 0 for n in checked.values()), checked  # every rule was exercised


def test_instruction_texts_and_query_images_look_right(roots: tuple[Path, Path, Path], tmp_path: Path) -> None:
    raw, enh_c, enh_q = roots
    dm = _datamodule(raw, enh_c, enh_q, "both", tmp_path)
    by_qid = {obj["qid"]: obj for _, obj in iter_jsonl(raw / "query/union_train/mbeir_union_up_train.jsonl")}
    for i in range(len(dm.train_set)):
        p = dm.train_set.pair(i)
        q = by_qid[p.qid]
        qmod, cmod = TASKS[q["task_id"]]
        assert p.query_text.startswith(f"Retrieve a {cmod} match for this {qmod} (")  # the tiny root's TSV wording
        if not q["query_txt"] and q["qid"].endswith(FAILED_QID_SUFFIX):
            assert p.query_text.endswith(").")  # image-only, failed caption: the instruction alone


def test_every_variant_sees_the_same_batches(roots: tuple[Path, Path, Path], tmp_path: Path) -> None:
    raw, enh_c, enh_q = roots
    seen = {}
    for variant in ("none", "corpus", "query", "both"):
        dm = _datamodule(raw, enh_c, enh_q, variant, tmp_path / variant)
        sampler = dm.train_dataloader().batch_sampler
        order = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            order += [[(dm.train_set.pair(i, e).qid, dm.train_set.pair(i, e).did) for i, e in b] for b in sampler]
        seen[variant] = order
    assert seen["none"] == seen["corpus"] == seen["query"] == seen["both"]
    assert seen["none"][0] != seen["none"][len(seen["none"]) // 2]  # epochs are reshuffled


def test_lightning_reaches_the_sampler_to_reshuffle_each_epoch(roots: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from lightning_fabric.utilities.data import _set_sampler_epoch

    loader = _datamodule(*roots, "none", tmp_path).train_dataloader()
    first = [[k for k in b] for b in loader.batch_sampler]
    _set_sampler_epoch(loader, 1)  # what Lightning's fit loop does at each epoch start
    assert [[k for k in b] for b in loader.batch_sampler] != first


def test_enhanced_variants_need_their_enhanced_files(roots: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import typer

    from rare.stages.command import enhanced_for

    raw, enh_c, enh_q = roots
    params = TrainParams(cache_dir=str(tmp_path))
    with pytest.raises(typer.BadParameter, match="needs enhanced data: pass --queries-enhanced"):
        enhanced_for("query", enh_c, None)  # the stage command checks what the variant reads
    assert enhanced_for("query", enh_c, enh_q) == (None, enh_q)  # and hands on only that
    with pytest.raises(DataError, match="enhanced file is missing"):
        resolve_inputs(MBEIRRoot(raw), params, tmp_path, None)
    used = resolve_inputs(MBEIRRoot(raw), params, None, enh_q)  # a side reads its mirror when it is given
    assert all(f.is_relative_to(enh_q) for f in used.train) and not used.train_pool.is_relative_to(enh_c)


def test_per_dataset_train_files_and_local_val_pools(roots: tuple[Path, Path, Path], tmp_path: Path) -> None:
    raw, _, _ = roots
    dm = _datamodule(raw, None, None, "none", tmp_path, train_file="per_dataset")
    assert [p.name for p in dm.inputs.train] == [f.name for f in MBEIRRoot(raw).train_files()]
    assert len(dm.train_set) == 27  # 9 dataset-tasks x 3, without the union file's up-sampled repeats
    vals = {(q.name, p.name) for q, p in dm.inputs.val}
    assert ("mbeir_mscoco_task0_val.jsonl", "mbeir_mscoco_task0_cand_pool.jsonl") in vals  # not the _test_ pool
    assert len(dm.val_set) == 27


def test_positive_drawn_per_epoch_among_those_in_the_pool(tmp_path: Path) -> None:
    raw = make_tiny_root(tmp_path / "raw")
    union = raw / "query/union_train/mbeir_union_up_train.jsonl"
    rows = [obj for _, obj in iter_jsonl(union)]
    pool_dids = [obj["did"] for _, obj in iter_jsonl(raw / "cand_pool/global/mbeir_union_train_cand_pool.jsonl")]
    rows[0]["pos_cand_list"] = [pool_dids[0], pool_dids[1], "9:123456789"]  # the last is in no pool
    union.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = _datamodule(raw, None, None, "none", tmp_path)
    drawn = {dm.train_set.pair(0, epoch).did for epoch in range(20)}
    assert drawn == {pool_dids[0], pool_dids[1]}
    assert dm.train_set.pair(0, 7).did == dm.train_set.pair(0, 7).did

    rows[1]["pos_cand_list"] = ["9:123456789"]
    union.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = _datamodule(raw, None, None, "none", tmp_path / "again")
    with pytest.raises(DataError, match=rf"mbeir_union_up_train.jsonl: query {rows[1]['qid']}: none of its positives"):
        dm.train_set.pair(1)


def test_bad_query_line_is_reported_with_file_and_line(tmp_path: Path) -> None:
    raw = make_tiny_root(tmp_path / "raw")
    union = raw / "query/union_train/mbeir_union_up_train.jsonl"
    lines = union.read_text().splitlines()
    lines[4] = lines[4].replace('"task_id": ', '"task_id": 99, "x": ')
    union.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"mbeir_union_up_train.jsonl:5: "):
        _datamodule(raw, None, None, "none", tmp_path)


def test_missing_train_pool_is_a_clear_error(tmp_path: Path) -> None:
    raw = make_tiny_root(tmp_path / "raw")
    (raw / "cand_pool/global/mbeir_union_train_cand_pool.jsonl").unlink()
    with pytest.raises(DataError, match="mbeir_union_train_cand_pool.jsonl: missing from the M-BEIR root"):
        resolve_inputs(MBEIRRoot(raw), TrainParams(cache_dir=str(tmp_path)), None, None)


# -- the sampler ---------------------------------------------------------------------------------
def _ids(batches: list[list[tuple[int, int]]]) -> list[list[int]]:
    return [[i for i, _ in b] for b in batches]


def test_ranks_split_exactly_the_single_process_global_batch() -> None:
    single = EpochBatchSampler(50, 8, seed=3)
    ranks = [EpochBatchSampler(50, 4, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in (single, *ranks):
        s.set_epoch(2)
    assert len(single) == len(ranks[0]) == 6
    merged = [a + b for a, b in zip(_ids(list(ranks[0])), _ids(list(ranks[1])))]
    assert merged == _ids(list(single))
    assert all(e == 2 for b in single for _, e in b)
    flat = [i for b in _ids(list(single)) for i in b]
    assert len(set(flat)) == 48 and set(flat) <= set(range(50))


def test_resume_skips_exactly_the_trained_batches() -> None:
    full = EpochBatchSampler(40, 4, seed=0)
    full.set_epoch(1)
    epoch1 = _ids(list(full))
    resumed = EpochBatchSampler(40, 4, seed=0)
    resumed.resume(10 + 3)  # 10 batches per epoch: epoch 0 done, then 3 batches of epoch 1
    resumed.set_epoch(1)
    assert _ids(list(resumed)) == epoch1[3:]
    resumed.set_epoch(2)
    assert len(list(resumed)) == 10  # later epochs are whole


def test_val_sampler_is_fixed_keeps_the_tail_and_caps_queries() -> None:
    val = EpochBatchSampler(10, 4, seed=0, shuffle=False, drop_last=False, reshuffle=False)
    assert _ids(list(val)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    capped = EpochBatchSampler(100, 4, seed=0, drop_last=False, limit=10, reshuffle=False)
    first = _ids(list(capped))
    capped.set_epoch(5)
    assert _ids(list(capped)) == first and sum(map(len, first)) == 10
    two = [EpochBatchSampler(10, 4, seed=0, rank=r, world_size=2, shuffle=False, drop_last=False) for r in range(2)]
    assert [len(b) for b in two[0]] == [len(b) for b in two[1]]  # equal shapes for all_gather


def test_cache_is_reused_and_follows_file_changes(tmp_path: Path) -> None:
    raw = make_tiny_root(tmp_path / "raw")
    _datamodule(raw, None, None, "none", tmp_path)
    arrows = sorted((tmp_path / "cache/arrow").glob("mbeir_union_up_train-*.arrow"))
    assert len(arrows) == 1
    _datamodule(raw, None, None, "none", tmp_path)
    assert sorted((tmp_path / "cache/arrow").glob("mbeir_union_up_train-*.arrow")) == arrows
    union = raw / "query/union_train/mbeir_union_up_train.jsonl"
    shutil.copy(union, tmp_path / "u.jsonl")
    union.write_text("".join(union.read_text().splitlines(keepends=True)[:20]))
    dm = _datamodule(raw, None, None, "none", tmp_path)
    assert len(dm.train_set) == 20
