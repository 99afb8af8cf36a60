"""One rule for every line-oriented input: UTF-8 with an optional BOM, CRLF, bad bytes as file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rare.data.input_error import DataError
from rare.data.instructions import InstructionTable
from rare.data.qrels import read_qrels
from rare.data.records import iter_queries, parse_query
from rare.evaluate.runfile import read_run

BOM = b"\xef\xbb\xbf"
QUERY = {"qid": "9:1", "query_txt": "a cat", "query_img_path": None, "query_modality": "text",
         "query_src_content": None, "pos_cand_list": ["9:5"], "neg_cand_list": [], "task_id": 0}
TSV_HEADER = b"query_modality\tcand_modality\tdataset\tdataset_id\tp1\tp2\tp3\tp4"
READERS = {
    "qrels": (read_qrels, [b"9:1 0 9:5 1 0", b"9:2 0 9:6 1 0"], {"9:1": {"9:5"}, "9:2": {"9:6"}}),
    "run": (read_run, [b"9:1 Q0 9:5 1 0.5 r", b"9:1 Q0 9:6 2 0.4 r"], {"9:1": ["9:5", "9:6"]}),
    "tsv": (lambda p: InstructionTable.load(p).prompts, [TSV_HEADER, b"text\timage\tMSCOCO\t9\tFind it."],
            {(9, "text", "image"): ("Find it.",)}),
    "jsonl": (lambda p: [q.qid for q in iter_queries(p)], [json.dumps(QUERY).encode()], ["9:1"]),
}


@pytest.mark.parametrize("kind", sorted(READERS))
def test_bom_and_crlf_are_accepted(tmp_path: Path, kind: str) -> None:
    read, lines, expected = READERS[kind]
    p = tmp_path / kind
    p.write_bytes(BOM + b"\r\n".join(lines) + b"\r\n")
    assert read(p) == expected


@pytest.mark.parametrize("kind", sorted(READERS))
def test_invalid_utf8_names_file_line_byte_and_column(tmp_path: Path, kind: str) -> None:
    read, lines, _ = READERS[kind]
    p = tmp_path / kind
    bad = lines[-1][:4] + b"\xff" + lines[-1][4:]
    p.write_bytes(b"\n".join([*lines[:-1], bad]) + b"\n")
    with pytest.raises(DataError) as exc:
        read(p)
    assert str(exc.value) == f"{p}:{len(lines)}: not valid UTF-8 (byte 0xff at column 5)"


def test_a_bool_is_not_an_integer_and_ids_are_checked() -> None:
    with pytest.raises(ValueError, match="'task_id' is True"):
        parse_query({**QUERY, "task_id": True})
    with pytest.raises(ValueError, match="'qid' must be a string '<dataset_id>:<n>' without spaces"):
        parse_query({**QUERY, "qid": "9:1 2"})
    with pytest.raises(ValueError, match=r"'pos_cand_list entry' must be a string '<dataset_id>:<n>'"):
        parse_query({**QUERY, "pos_cand_list": ["\u00b2:1"]})
    with pytest.raises(ValueError, match="'enhanced.op' must be a string"):
        parse_query({**QUERY, "enhanced": {"op": 3, "status": "ok"}})


def test_text_columns_take_ascii_digits_only(tmp_path: Path) -> None:
    p = tmp_path / "qrels"
    p.write_text("9:1 0 9:5 1 \u00b2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r":1: task_id '\u00b2' is not an integer"):
        read_qrels(p)
    p.write_text("9:1 Q0 9:5 -1 0.5 r\n", encoding="utf-8")
    with pytest.raises(DataError, match=r":1: rank '-1' must be an integer >= 1"):
        read_run(p)
    with pytest.raises(DataError, match="file not found"):
        read_run(tmp_path / "missing")
