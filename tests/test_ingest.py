"""`rare import`: every input format on tiny fixtures written here, imported to a root `rare validate` accepts;
splits stable across reruns and row orders; malformed rows reported with file and line; kill -9 mid-import."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from rare.cli import app
from rare.data.layout import MBEIRRoot
from rare.data.qrels import read_qrels
from rare.data.records import iter_candidates, iter_queries
from rare.ingest import ImportOptions, Source, import_root
from rare.validate import validate_root

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200),
           (120, 60, 10), (10, 60, 120), (250, 250, 250), (5, 5, 5), (128, 128, 128), (90, 180, 40)]


def png(i: int, size: int = 16) -> bytes:
    img = Image.new("RGB", (size, size), COLOURS[i % len(COLOURS)])
    img.putpixel((i % size, (i // size) % size), (i % 256, 7, 9))  # every i a different image
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def items(n: int) -> list[tuple[str, str, str | None]]:
    """(file name, text, group): pairs share a group, so image->image appears."""
    return [(f"img{i}.png", f"picture number {i} of a coloured square", f"g{i // 2}" if i < n // 2 else None)
            for i in range(n)]


def write_images(folder: Path, rows: list[tuple[str, str, str | None]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, _t, _g in rows:
        (folder / name).write_bytes(png(int(name[3:-4])))  # img<i>.png: its content follows its name


def write_jsonl(folder: Path, rows: list) -> Path:
    write_images(folder, rows)
    path = folder / "captions.jsonl"
    path.write_text("".join(json.dumps({"image": n, "text": t, **({"group": g} if g else {})}) + "\n"
                            for n, t, g in rows), encoding="utf-8")
    return path


def write_csv(folder: Path, rows: list, sep: str = ",") -> Path:
    write_images(folder, rows)
    path = folder / ("captions.csv" if sep == "," else "captions.tsv")
    path.write_text(sep.join(["image", "text", "group"]) + "\n"
                    + "".join(sep.join([n, t, g or ""]) + "\n" for n, t, g in rows), encoding="utf-8")
    return path


def _table(rows: list) -> pa.Table:
    return pa.table({"image": [{"bytes": png(i), "path": n} for i, (n, _t, _g) in enumerate(rows)],
                     "caption": [t for _n, t, _g in rows], "entity_id": [g for _n, _t, g in rows]})


def write_parquet(folder: Path, rows: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "data.parquet"
    pq.write_table(_table(rows), path, row_group_size=5)
    return path


def write_hf(folder: Path, rows: list) -> Path:
    """What `datasets.Dataset.save_to_disk` writes: Arrow stream files listed in state.json."""
    ds = folder / "hf"
    ds.mkdir(parents=True)
    table = _table(rows)
    with pa.OSFile(str(ds / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=4)
    (ds / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (ds / "dataset_info.json").write_text("{}")
    return ds


def write_wds(folder: Path, rows: list) -> Path:
    shards = folder / "shards"
    shards.mkdir(parents=True)
    for s in range(2):
        with tarfile.open(shards / f"part-{s:05d}.tar", "w") as tar:
            for i, (n, t, g) in enumerate(rows):
                if i % 2 != s:
                    continue
                key = f"sample{i:04d}"
                payload = {f"{key}.png": png(i)}
                if g:
                    payload[f"{key}.json"] = json.dumps({"caption": t, "group": g}).encode()
                else:
                    payload[f"{key}.txt"] = t.encode()
                for name, data in payload.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return shards


WRITERS = {"jsonl": write_jsonl, "csv": write_csv, "tsv": lambda f, r: write_csv(f, r, "\t"),
           "parquet": write_parquet, "hf": write_hf, "webdataset": write_wds}
OPTS = ImportOptions(val=0.2, test=0.3, min_i2i_queries=1)


def _ids_by_image(root: Path) -> dict[str, tuple[str, str]]:
    """image file name -> (split, did) of its task-0 candidate: what must not move between runs."""
    r = MBEIRRoot(root)
    out = {}
    for split, pool in (("eval", root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl"),
                        ("train", r.global_pool("train"))):
        for c in iter_candidates(pool):
            if c.img_path:
                out.setdefault(Path(c.img_path).name, (split, c.did))
    return out


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_each_format_imports_to_a_valid_root(tmp_path: Path, fmt: str) -> None:
    rows = items(24)
    src = WRITERS[fmt](tmp_path / "in", rows)
    out = tmp_path / "root"
    result = import_root([Source("mine", src)], out, OPTS)
    assert result.items == {"mine": 24} and not result.rejected
    report = validate_root(out)
    assert not report.errors, [str(p) for p in report.errors]
    assert report.counts["images"] == 24
    root = MBEIRRoot(out)
    tasks = {dt.name for dt in root.eval_tasks("test")}
    assert {"mine_task0", "mine_task3"} <= tasks
    # the pairs (g0..g5) give image->image queries whose positives are the group's other member
    i2i = [q for split in ("train", "val", "test") for p in [root.query_file(split, "mine", 4) if split != "train"
           else root.query_file("train", "mine")] if p.exists() for q in iter_queries(p) if q.task_id == 4]
    assert i2i and all(len(q.pos) == 1 for q in i2i)
    # text->image positives: every image of the query's group
    t2i = list(iter_queries(root.query_file("test", "mine", 0)))
    pools = {c.did: c for c in iter_candidates(root.local_pool(root.eval_tasks("test")[0]))}
    for q in t2i:
        assert all(pools[d].modality == "image" for d in q.pos)
        group = json.loads(q.src_content)["group"] if q.src_content else None
        assert len(q.pos) == (2 if group else 1)
    qrels = read_qrels(root.qrels_file("test", "mine_task0"))
    assert {q.qid: set(q.pos) for q in t2i} == qrels
    union = sum(1 for _ in open(root.union_train_file))
    assert union == result.counts["union_train"] > 0
    tsv = root.instructions_file.read_text().splitlines()
    assert tsv[0].startswith("query_modality\tcand_modality") and any("\tmine\t100\t" in ln for ln in tsv[1:])


def test_splits_stable_across_reruns_and_row_order(tmp_path: Path) -> None:
    rows = items(40)
    a = import_root([Source("mine", write_jsonl(tmp_path / "a", rows))], tmp_path / "ra", OPTS)
    b = import_root([Source("mine", write_jsonl(tmp_path / "b", list(reversed(rows))))], tmp_path / "rb", OPTS)
    ids_a, ids_b = _ids_by_image(tmp_path / "ra"), _ids_by_image(tmp_path / "rb")
    assert ids_a == ids_b and len(ids_a) == 40
    assert {s for s, _ in ids_a.values()} == {"eval", "train"}
    # a rerun into the same root is byte-identical
    before = {p: p.read_bytes() for p in (tmp_path / "ra").rglob("*.jsonl")}
    import_root([Source("mine", write_jsonl(tmp_path / "a", rows))], tmp_path / "ra", OPTS)
    assert before == {p: p.read_bytes() for p in (tmp_path / "ra").rglob("*.jsonl")}
    assert a.counts == b.counts
    # another seed is another split
    import_root([Source("mine", tmp_path / "a" / "captions.jsonl")], tmp_path / "rc", ImportOptions(0.2, 0.3, seed=1))
    assert _ids_by_image(tmp_path / "rc") != ids_a


def test_malformed_rows_are_reported_and_the_rest_imported(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    rows = items(20)
    write_images(folder, rows)
    (folder / "notimage.png").write_bytes(b"this is text, not a PNG")
    (folder / "copy.png").write_bytes(png(3))
    lines = [json.dumps({"image": n, "text": t}) for n, t, _g in rows]
    bad = {
        21: (json.dumps({"image": "missing.png", "text": "gone"}), "missing.png not found"),
        22: (json.dumps({"image": "notimage.png", "text": "words"}), "not a usable image"),
        23: (json.dumps({"image": "img0.png", "text": "   "}), "empty text"),
        24: ("__BADBYTES__", "not valid UTF-8"),
        25: (json.dumps({"image": "copy.png", "text": "same pixels"}), "duplicate image"),
        26: ("{not json", "invalid JSON"),
    }
    text = "\n".join(lines + [v[0] for v in bad.values()]) + "\n"
    data = text.encode().replace(b"__BADBYTES__", json.dumps({"image": "img1.png", "text": "caf"}).encode()[:-2]
                                 + b"\xe9\"}")
    (folder / "captions.jsonl").write_bytes(data)
    out = tmp_path / "root"
    res = CliRunner().invoke(app, ["import", f"mine={folder / 'captions.jsonl'}", "--out", str(out)])
    assert res.exit_code == 0, res.output
    for line, (_raw, cause) in bad.items():
        hits = [ln for ln in res.output.splitlines() if f"captions.jsonl:{line}:" in ln]
        assert len(hits) == 1 and cause in hits[0], (line, res.output)
    assert "duplicate image" in res.output and "captions.jsonl:4" in res.output  # names the first copy (img3, line 4)
    assert "20 items from 26 rows" in res.output and "6 rejected" in res.output
    assert not validate_root(out).errors
    assert len((out / "import_rejected.txt").read_text().splitlines()) == 6


def test_unsupported_format_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "data.xlsx"
    bad.write_bytes(b"PK")
    res = CliRunner().invoke(app, ["import", str(bad), "--out", str(tmp_path / "root")])
    assert res.exit_code == 1
    err = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "'.xlsx'" in err[0] and "parquet" in err[0] and "webdataset" in err[0]
    assert not (tmp_path / "root").exists()
    csv = tmp_path / "c.csv"
    csv.write_text("file_name,label\nx.png,cat\n")
    res = CliRunner().invoke(app, ["import", str(csv), "--out", str(tmp_path / "root")])
    assert res.exit_code == 1 and "c.csv:1: the header must name an image column" in res.output


def test_unknown_format_name_and_bad_name(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in", items(10))
    res = CliRunner().invoke(app, ["import", str(src), "--format", "xml", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "unknown format 'xml'" in res.output
    res = CliRunner().invoke(app, ["import", f"My_Data={src}", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "lowercase letters and digits" in res.output


def test_two_sources_one_root(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a", items(16))
    b = write_parquet(tmp_path / "b", [(f"x{i}", f"other caption {i}", None) for i in range(16)])
    # the parquet's images are png(0..15) too: the same content as a's, so all are duplicates ...
    with pytest.raises(ValueError, match="no usable rows"):
        import_root([Source("first", a), Source("second", b)], tmp_path / "r", OPTS)
    assert not (tmp_path / "r").exists()
    c = write_wds(tmp_path / "c", [(f"x{i}", f"third caption {i}", None) for i in range(16)])
    with pytest.raises(ValueError, match="no usable rows"):
        import_root([Source("first", a), Source("third", c)], tmp_path / "r", OPTS)
    # ... and distinct images import side by side, with ids 100 and 101
    d = tmp_path / "d"
    d.mkdir()
    for i in range(16):
        (d / f"y{i}.png").write_bytes(png(i, size=20))
    (d / "c.tsv").write_text("path\tdescription\n" + "".join(f"y{i}.png\tfourth {i}\n" for i in range(16)))
    res = import_root([Source("first", a), Source("fourth", d / "c.tsv")], tmp_path / "r", OPTS)
    assert res.items == {"first": 16, "fourth": 16}
    assert not validate_root(tmp_path / "r").errors
    dids = {c.did.split(":")[0] for c in iter_candidates(tmp_path / "r/cand_pool/global/mbeir_union_test_cand_pool.jsonl")}
    assert dids == {"100", "101"}


KILL_SCRIPT = """
import sys, time
from pathlib import Path
from rare.ingest import build, Source, ImportOptions
orig = build._Collector._check
def slow(self, name, row):
    time.sleep(0.01)
    return orig(self, name, row)
build._Collector._check = slow
build.import_root([Source("mine", Path(sys.argv[1]))], Path(sys.argv[2]), ImportOptions(0.2, 0.3))
"""


def test_kill_9_mid_import_then_rerun(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in", items(300))
    out = tmp_path / "root"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(src), str(out)])
    deadline = time.time() + 60
    temp = None
    while time.time() < deadline:
        temps = list(tmp_path.glob(".root.tmp-*"))
        if temps and len(list(temps[0].rglob("*.png"))) > 20:
            temp = temps[0]
            break
        time.sleep(0.05)
    assert temp is not None, "the import never started writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing half-written where readers look
    assert validate_root(temp).errors  # and the dead run's temp folder is not a root that validates
    res = import_root([Source("mine", src)], out, OPTS)
    assert res.items == {"mine": 300}
    assert not validate_root(out).errors
    assert not list(tmp_path.glob(".root.tmp-*"))  # the dead run's temp folder was removed


def test_imported_datasets_are_known_to_every_reader_of_the_root(tmp_path: Path) -> None:
    from rare.mbeir import IMPORTED, DatasetTask, dataset

    import_root([Source("zzdata", write_jsonl(tmp_path / "in", items(12)))], tmp_path / "root",
                ImportOptions(0.2, 0.3, first_id=321))
    IMPORTED.pop("zzdata", None)
    with pytest.raises(KeyError, match="unknown dataset 'zzdata'"):
        dataset("zzdata")
    MBEIRRoot.open(tmp_path / "root")  # what evaluation, training, reports and serve do first
    assert dataset("zzdata").id == 321 and dataset(321).name == "zzdata"
    assert DatasetTask("zzdata", 0).ks == (1, 5, 10)
    with pytest.raises(ValueError, match="clashes with the built-in dataset 'mscoco'"):
        import_root([Source("mscoco", tmp_path / "in" / "captions.jsonl")], tmp_path / "r2", OPTS)


def test_image_to_image_needs_enough_test_groups(tmp_path: Path) -> None:
    """Fewer test groups than min_i2i_queries: no task-4 evaluation (one query would swing the mean), and the
    train split keeps its image->image queries."""
    src = write_jsonl(tmp_path / "in", items(24))  # 6 pairs
    import_root([Source("mine", src)], tmp_path / "r", ImportOptions(val=0.2, test=0.3, min_i2i_queries=50))
    root = MBEIRRoot(tmp_path / "r")
    assert {dt.task_id for dt in root.eval_tasks("test")} == {0, 3}
    assert not list((tmp_path / "r/cand_pool/local").glob("*task4*"))
    assert any(q.task_id == 4 for q in iter_queries(root.query_file("train", "mine")))
    assert not validate_root(tmp_path / "r").errors


def _images_of(root: Path) -> list[Path]:
    return sorted((root / "mbeir_images").rglob("*.png"))


def test_image_files_are_hard_linked_unless_copies_are_asked_for(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in", items(12))
    inputs = {(p.stat().st_ino) for p in (tmp_path / "in").glob("*.png")}
    res = CliRunner().invoke(app, ["import", f"mine={src}", "--out", str(tmp_path / "linked")])
    assert res.exit_code == 0, res.output
    assert {p.stat().st_ino for p in _images_of(tmp_path / "linked")} == inputs
    res = CliRunner().invoke(app, ["import", f"mine={src}", "--out", str(tmp_path / "copied"), "--copy"])
    assert res.exit_code == 0, res.output
    copies = _images_of(tmp_path / "copied")
    assert len(copies) == 12 and not {p.stat().st_ino for p in copies} & inputs
    assert sorted(p.read_bytes() for p in copies) == sorted(p.read_bytes() for p in _images_of(tmp_path / "linked"))


def test_an_image_that_cannot_be_linked_is_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    src = write_jsonl(tmp_path / "in", items(12))
    import_root([Source("mine", src)], tmp_path / "root", OPTS)
    inputs = {p.stat().st_ino for p in (tmp_path / "in").glob("*.png")}
    assert len(_images_of(tmp_path / "root")) == 12
    assert not {p.stat().st_ino for p in _images_of(tmp_path / "root")} & inputs
    assert not validate_root(tmp_path / "root").errors


def test_validate_finds_a_linked_input_edited_in_place(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in", items(12))
    import_root([Source("mine", src)], tmp_path / "root", OPTS)
    assert not validate_root(tmp_path / "root").errors
    with open(tmp_path / "in/img5.png", "r+b") as fh:  # in place, as some editors save: the root's file changes too
        fh.write(png(7))
    errs = [p for p in validate_root(tmp_path / "root").errors if "no longer hash to its name" in p.cause]
    assert len(errs) == 1 and errs[0].line is not None and errs[0].path.endswith(".jsonl")
    assert validate_root(tmp_path / "root", check_images=False).errors == []  # a record check alone reads no bytes
