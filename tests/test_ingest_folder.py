"""`rare import` on captions files with RFC 4180 multiline fields, and on a folder given without its captions
file (a captions/metadata file inside it, or a .txt beside each image)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from rare.cli import app
from rare.data.records import iter_queries
from rare.ingest import Source, import_root
from rare.ingest.captions import read_csv, read_tsv
from rare.ingest.formats import detect_format
from rare.ingest.rows import Rejected, Row
from rare.validate import validate_root
from tests.test_ingest import OPTS, items, png, write_images, write_jsonl


def _texts(root: Path) -> set[str]:
    return {q.txt for split in ("train", "val", "test") for p in root.glob(f"query/{split}/*.jsonl")
            for q in iter_queries(p) if q.txt}


def test_csv_quoted_fields_span_lines_and_rows_keep_their_line_numbers(tmp_path: Path) -> None:
    rows = items(12)
    write_images(tmp_path, rows)
    body = (
        'image,text,group\r\n'                                                  # line 1
        'img0.png,"a ""quoted"" caption\nsecond line, with a comma",g0\r\n'     # lines 2-3
        'img1.png,plain one,g0\n'                                               # line 4
        'missing.png,"two\n\nparagraphs",\n'                                    # lines 5-7: image not found
        'img2.png,"one, two\nthree",\n'                                         # lines 8-9
        'img3.png,"x"y,\n'                                                      # line 10: text after a closing quote
        'img4.png,"split\nover",extra,cells\n'                                  # lines 11-12: four columns
        '\n'                                                                    # line 13: blank
        'img5.png,café,\n'                                                      # line 14: bad byte, replaced below
        'img6.png,last good row,\n'                                             # line 15
        'img7.png,"never closed\nimg8.png,swallowed,\n'                         # lines 16-17: quote never closes
    )
    path = tmp_path / "captions.csv"
    path.write_bytes(body.encode().replace("café".encode(), b"caf\xe9"))
    got = list(read_csv(str(path)))
    kept = {r.where.line: r.text for r in got if isinstance(r, Row)}
    assert kept == {2: 'a "quoted" caption second line, with a comma', 4: "plain one", 5: "two paragraphs",
                    8: "one, two three", 15: "last good row"}
    rejected = {r.where.line: r.cause for r in got if isinstance(r, Rejected)}
    assert set(rejected) == {10, 11, 14, 16}
    assert "',' expected after '\"'" in rejected[10]
    assert rejected[11] == "expected 3 columns, got 4 (lines 11-12: a quoted field spans them)"
    assert rejected[14].startswith("not valid UTF-8 (byte 0xe9")
    assert rejected[16] == "a quoted field opened here is never closed (it runs to line 17, the end of the file)"
    # end to end: the rejected rows name the right physical lines, the rest imports to a valid root
    res = CliRunner().invoke(app, ["import", f"mine={path}", "--out", str(tmp_path / "root"), "--test", "0.3"])
    assert res.exit_code == 0, res.output
    for line in (5, 10, 11, 14, 16):
        assert sum(f"captions.csv:{line}:" in ln for ln in res.output.splitlines()) == 1, (line, res.output)
    assert not validate_root(tmp_path / "root").errors
    assert 'a "quoted" caption second line, with a comma' in _texts(tmp_path / "root")


def test_tsv_multiline_field_and_bad_byte_inside_it(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv"
    path.write_bytes(b'image\ttext\nimg0.png\t"first\nsec\xffond"\nimg1.png\tfine\n')
    got = list(read_tsv(str(path)))
    assert isinstance(got[0], Rejected) and got[0].where.line == 2 and got[0].cause.endswith("on line 3")
    assert isinstance(got[1], Row) and got[1].where.line == 4 and got[1].text == "fine"


def test_folder_with_a_captions_file_inside(tmp_path: Path) -> None:
    rows = items(20)
    write_jsonl(tmp_path / "a", rows)
    # Hugging Face imagefolder's layout: metadata.jsonl with a file_name column
    b = tmp_path / "b"
    write_images(b, rows)
    (b / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "text": t}) + "\n" for n, t, _g in rows))
    for folder in (tmp_path / "a", b):
        assert detect_format(folder).name == "folder"
        res = CliRunner().invoke(app, ["import", str(folder), "--out", str(tmp_path / f"root_{folder.name}")])
        assert res.exit_code == 0, res.output
        assert f"20 items from 20 rows ({folder.name} 20)" in res.output
        assert not validate_root(tmp_path / f"root_{folder.name}").errors
    # the same rows imported through the named file and through the folder give the same root
    direct = import_root([Source("a", tmp_path / "a" / "captions.jsonl")], tmp_path / "direct", OPTS)
    via = import_root([Source("a", tmp_path / "a")], tmp_path / "via", OPTS)
    assert direct.counts == via.counts
    assert ({p.relative_to(tmp_path / "direct"): p.read_bytes() for p in (tmp_path / "direct").rglob("*.jsonl")}
            == {p.relative_to(tmp_path / "via"): p.read_bytes() for p in (tmp_path / "via").rglob("*.jsonl")})


def test_folder_of_images_with_txt_sidecars(tmp_path: Path) -> None:
    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    for i in range(18):
        where = folder / "sub" if i % 3 == 0 else folder
        (where / f"p{i:02d}.png").write_bytes(png(i))
        (where / f"p{i:02d}.txt").write_text(f"a square drawn for sidecar number {i}\n")
    (folder / "lonely.png").write_bytes(png(40))                      # no .txt beside it
    (folder / "blank.png").write_bytes(png(41))
    (folder / "blank.txt").write_text("  \n")                          # empty text
    (folder / "notes.md").write_text("not an image, ignored")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x.png").write_bytes(png(42))                # hidden folders are skipped
    (folder / ".cache" / "x.txt").write_text("hidden")
    assert detect_format(folder).name == "folder"
    res = import_root([Source.parse(str(folder))], tmp_path / "root", OPTS)
    assert res.items == {"pics": 18}
    causes = {Path(r.where.file).name: r.cause for r in res.rejected}
    assert causes == {"lonely.png": "no caption: lonely.txt is not beside it", "blank.txt": "empty text"}
    assert not validate_root(tmp_path / "root").errors
    assert "a square drawn for sidecar number 3" in _texts(tmp_path / "root")


def test_folder_with_neither_is_one_error_naming_it_and_what_was_looked_for(tmp_path: Path) -> None:
    folder = tmp_path / "empty_ish"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(1))  # an image, but no text for it anywhere
    (folder / "readme.txt").write_text("a text with no image of its name")
    res = CliRunner().invoke(app, ["import", str(folder), "--out", str(tmp_path / "root")])
    assert res.exit_code == 1
    err = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(err) == 1, res.output
    assert str(folder) in err[0] and "captions.csv" in err[0] and "metadata.jsonl" in err[0]
    assert "with a .txt beside each" in err[0] and "state.json" in err[0] and ".tar shards" in err[0]
    assert not (tmp_path / "root").exists()
