"""Streaming readers and writers for M-BEIR JSONL records.

Records are parsed one line at a time so a 5.6M-line pool never sits in memory as Python
objects. Originals are kept verbatim: enhancement adds an ``enhanced`` block beside them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rare.atomic import replacing
from rare.data.input_error import DataError
from rare.data.lines import OnError, decode_line, iter_lines, strict_int
from rare.mbeir import MODALITIES, TASKS, dataset_id_of

QUERY_FIELDS = frozenset(
    {"qid", "query_txt", "query_img_path", "query_modality", "query_src_content",
     "pos_cand_list", "neg_cand_list", "task_id"}
)
CANDIDATE_FIELDS = frozenset({"did", "txt", "img_path", "modality", "src_content"})
EXTENSION_FIELDS = frozenset({"enhanced"})  # rare's one addition to the format
ENHANCED_STATUSES = ("ok", "failed", "skipped")
ENHANCED_FIELDS = frozenset({"op", "status", "txt", "cause", "backend", "model", "prompt_version"})


@dataclass(slots=True)
class Enhanced:
    """VLM output stored beside an original record; ``txt`` is None unless ``status == "ok"``."""

    op: str
    status: str
    txt: str | None = None
    cause: str | None = None
    backend: str = ""
    model: str = ""
    prompt_version: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.txt)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "status": self.status, "txt": self.txt, "cause": self.cause,
                "backend": self.backend, "model": self.model, "prompt_version": self.prompt_version}


@dataclass(slots=True)
class Query:
    qid: str
    txt: str
    img_path: str | None
    modality: str
    task_id: int
    pos: list[str]
    neg: list[str] = field(default_factory=list)
    src_content: str | None = None
    enhanced: Enhanced | None = None


@dataclass(slots=True)
class Candidate:
    did: str
    txt: str
    img_path: str | None
    modality: str
    src_content: str | None = None
    enhanced: Enhanced | None = None


def loads_line(raw: bytes | str, path: str | Path, lineno: int) -> dict[str, Any]:
    """One JSONL line as an object, or a DataError naming the file and line (bytes are decoded by the
    one line rule of ``rare.data.lines``)."""
    text = decode_line(raw, path, lineno) if isinstance(raw, bytes) else raw
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DataError(path, lineno, f"malformed JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def iter_jsonl(path: str | Path, on_error: OnError | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object); blank lines are skipped. A malformed line raises, or with
    ``on_error`` is reported there and skipped."""
    for lineno, text in iter_lines(path, on_error):
        try:
            obj = loads_line(text, path, lineno)
        except DataError as exc:
            if on_error is None:
                raise
            on_error(exc)
            continue
        yield lineno, obj


def _ids(value: Any, key: str) -> list[str]:
    """Positives come as strings in real files and as {"did": ..} on the dataset card: accept both."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"'{key}' must be a list, got {type(value).__name__}")
    out = []
    for item in value:
        did = item.get("did") if isinstance(item, dict) else item
        if not isinstance(did, str):
            raise ValueError(f"'{key}' entries must be did strings or {{\"did\": ..}}, got {item!r}")
        out.append(_record_id(did, f"{key} entry"))
    return out


_SPACE = re.compile(r"\s")
_CONTROL = re.compile(r"[\x00-\x1f]")
_RECORD_ID = re.compile(r"[0-9]+:\S*")  # what the checks below accept, in one C call (this runs per id)


def _record_id(value: Any, key: str) -> str:
    """qids and dids are '<dataset_id>:<n>' with no whitespace: they become columns of qrels and run files."""
    if isinstance(value, str) and _RECORD_ID.fullmatch(value):
        return value
    if not isinstance(value, str) or not value or _SPACE.search(value):
        raise ValueError(f"'{key}' must be a string '<dataset_id>:<n>' without spaces, got {value!r}")
    try:
        dataset_id_of(value)
    except ValueError:
        raise ValueError(f"'{key}' must be a string '<dataset_id>:<n>', got {value!r}") from None
    return value


def _text(value: Any, key: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string or null, got {type(value).__name__}")
    return value


def _opt_str(value: Any, key: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string or null, got {type(value).__name__}")
    return value


def _img_path(value: Any, key: str) -> str | None:
    """A path string without control characters (a NUL cannot even be opened); where it points is
    checked when the image is resolved."""
    path = _opt_str(value, key)
    if path is not None and _CONTROL.search(path):
        raise ValueError(f"'{key}' contains a control character: {path!r}")
    return path


def _check_fields(obj: dict[str, Any], required: frozenset[str]) -> None:
    if obj.keys() == required:  # the common case, one set comparison (this runs per record)
        return
    missing = sorted(required - obj.keys())
    extra = sorted(obj.keys() - required - EXTENSION_FIELDS)
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    if extra:
        raise ValueError(f"unexpected field(s) {extra}; allowed: {sorted(required | EXTENSION_FIELDS)}")


def _modality(value: Any, key: str, has_img: bool) -> str:
    if value not in MODALITIES:
        raise ValueError(f"'{key}' is {value!r}; allowed: {list(MODALITIES)}")
    if "image" in value and not has_img:
        raise ValueError(f"'{key}' is {value!r} but there is no image path")
    return value


def parse_enhanced(value: Any) -> Enhanced | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"'enhanced' must be an object, got {type(value).__name__}")
    extra = sorted(value.keys() - ENHANCED_FIELDS)
    if extra:
        raise ValueError(f"unexpected field(s) {extra} in 'enhanced'; allowed: {sorted(ENHANCED_FIELDS)}")
    status = value.get("status")
    if status not in ENHANCED_STATUSES:
        raise ValueError(f"'enhanced.status' is {status!r}; allowed: {list(ENHANCED_STATUSES)}")
    return Enhanced(
        op=_text(value.get("op"), "enhanced.op"), status=status, txt=_opt_str(value.get("txt"), "enhanced.txt"),
        cause=_opt_str(value.get("cause"), "enhanced.cause"), backend=_text(value.get("backend"), "enhanced.backend"),
        model=_text(value.get("model"), "enhanced.model"),
        prompt_version=_text(value.get("prompt_version"), "enhanced.prompt_version"),
    )


def parse_query(obj: dict[str, Any]) -> Query:
    """Raise ValueError naming the offending field; callers add file and line."""
    _check_fields(obj, QUERY_FIELDS)
    qid = _record_id(obj["qid"], "qid")
    task_id = obj["task_id"]
    if not strict_int(task_id) or task_id not in TASKS:
        raise ValueError(f"'task_id' is {task_id!r}; allowed: {sorted(TASKS)}")
    txt = _text(obj["query_txt"], "query_txt")
    img = _img_path(obj["query_img_path"], "query_img_path")
    pos = _ids(obj["pos_cand_list"], "pos_cand_list")
    if not pos:
        raise ValueError("'pos_cand_list' is empty; every query needs at least one positive")
    return Query(
        qid=qid, txt=txt, img_path=img,
        modality=_modality(obj["query_modality"], "query_modality", bool(img)),
        task_id=task_id, pos=pos, neg=_ids(obj["neg_cand_list"], "neg_cand_list"),
        src_content=_opt_str(obj["query_src_content"], "query_src_content"),
        enhanced=parse_enhanced(obj.get("enhanced")),
    )


def parse_candidate(obj: dict[str, Any]) -> Candidate:
    _check_fields(obj, CANDIDATE_FIELDS)
    did = _record_id(obj["did"], "did")
    txt = _text(obj["txt"], "txt")
    img = _img_path(obj["img_path"], "img_path")
    return Candidate(
        did=did, txt=txt, img_path=img, modality=_modality(obj["modality"], "modality", bool(img)),
        src_content=_opt_str(obj["src_content"], "src_content"), enhanced=parse_enhanced(obj.get("enhanced")),
    )


def iter_queries(path: str | Path) -> Iterator[Query]:
    for lineno, obj in iter_jsonl(path):
        try:
            yield parse_query(obj)
        except ValueError as exc:
            raise DataError(path, lineno, str(exc)) from None


def iter_candidates(path: str | Path) -> Iterator[Candidate]:
    for lineno, obj in iter_jsonl(path):
        try:
            yield parse_candidate(obj)
        except ValueError as exc:
            raise DataError(path, lineno, str(exc)) from None


_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # built once: this runs per record


def dumps(obj: dict[str, Any]) -> str:
    """One canonical serialisation (key order kept, UTF-8, no spaces) so reruns are byte-identical."""
    return _CANONICAL.encode(obj)


def write_jsonl(path: str | Path, objs: Iterable[dict[str, Any]]) -> int:
    """Write atomically (temp file + rename): a killed writer never leaves a half file behind."""
    n = 0
    with replacing(Path(path)) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for obj in objs:
            fh.write(dumps(obj))
            fh.write("\n")
            n += 1
    return n
