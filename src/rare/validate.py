"""``rare validate ROOT``: every problem in an M-BEIR-layout root, each as file:line: cause.

It keeps going after the first problem so one run lists everything to fix. Ids are kept as
int64 keys where they have the "<dataset_id>:<n>" form, so the 5.6M-did global pool fits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rare.data.images import ImageLoadError, ImageRoot, open_image
from rare.data.input_error import DataError
from rare.data.instructions import InstructionTable
from rare.data.layout import CONTENT_NAMED_IMAGE, DATASETS_FILE, MBEIRRoot
from rare.data.qrels import iter_qrels
from rare.data.records import iter_jsonl, parse_candidate, parse_query
from rare.hashing import file_digest
from rare.mbeir import TASKS, dataset_id_of

_QRELS = re.compile(r"^mbeir_(?P<stem>.+)_(?P<split>train|val|test)_qrels\.txt$")
_UPSAMPLED = re.compile(r"_up_train\.jsonl$")


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" | "warning"
    path: str
    line: int | None
    cause: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{self.severity}: {where}: {self.cause}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def error(self, path: Path | str, line: int | None, cause: str) -> None:
        self.problems.append(Problem("error", str(path), line, cause))

    def warn(self, path: Path | str, line: int | None, cause: str) -> None:
        self.problems.append(Problem("warning", str(path), line, cause))


class _IdSet:
    """Membership for dids: numeric keys in a sorted int64 array, anything else in a Python set."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._pending: list[int] = []
        self._other: set[str] = set()
        self._keys: np.ndarray | None = None

    @staticmethod
    def key(did: str) -> int | None:
        head, sep, tail = did.partition(":")
        if sep and head.isdigit() and tail.isdigit():
            h, t = int(head), int(tail)
            if t < 1 << 40 and h < 1 << 22:
                return (h << 40) | t
        return None

    def add(self, did: str) -> None:
        k = self.key(did)
        if k is None:
            self._other.add(did)
            return
        self._pending.append(k)
        if len(self._pending) >= 1 << 20:
            self._chunks.append(np.array(self._pending, dtype=np.int64))
            self._pending = []

    def freeze(self) -> None:
        self._chunks.append(np.array(self._pending, dtype=np.int64))
        self._pending = []
        self._keys = np.unique(np.concatenate(self._chunks))
        self._chunks = []

    def contains(self, dids: list[str]) -> np.ndarray:
        """Membership of each of ``dids``, looked up together (one searchsorted for all numeric keys)."""
        assert self._keys is not None, "freeze() first"
        keys = [self.key(did) for did in dids]
        found = np.array([k is None and did in self._other for k, did in zip(keys, dids)], dtype=bool)
        numeric = np.array([k is not None for k in keys], dtype=bool)
        if numeric.any() and len(self._keys):
            wanted = np.array([k for k in keys if k is not None], dtype=np.int64)
            i = np.minimum(np.searchsorted(self._keys, wanted), len(self._keys) - 1)
            found[numeric] = self._keys[i] == wanted
        return found


@dataclass
class _QueryFile:
    path: Path
    split: str
    positives: dict[str, tuple[int, frozenset[str], int]] = field(default_factory=dict)  # qid -> (line, pos, task)
    has_qrels: bool = False


def _records(report: Report, path: Path) -> Iterator[tuple[int, dict]]:
    """iter_jsonl that records malformed lines and carries on."""
    return iter_jsonl(path, on_error=lambda exc: report.error(exc.path, exc.line, exc.cause))


class _Validator:
    def __init__(self, root: Path, check_images: bool):
        self.root = MBEIRRoot(root)
        self.report = Report()
        self.check_images = check_images
        self.images: dict[str, tuple[Path, int]] = {}  # img_path -> first (file, line)
        self.image_root = ImageRoot(self.root.path)  # resolves each folder once: a root holds millions of paths
        self.pool_dids = _IdSet()
        self.local_pools: dict[str, _IdSet] = {}  # "<dataset>_task<k>" -> dids
        self.local_pool_files: dict[str, list[Path]] = {}  # "<dataset>_task<k>" -> its pool file(s)
        self.query_files: list[_QueryFile] = []
        self.instructions: InstructionTable | None = None

    # ------------------------------------------------------------------ run
    def run(self) -> Report:
        r, root = self.report, self.root.path
        if not root.is_dir():
            r.error(root, None, "data root does not exist or is not a directory")
            return r
        for sub in ("query", "cand_pool", "qrels", "instructions"):
            if not (root / sub).is_dir():
                r.error(root / sub, None, "required directory is missing")
        self._instructions()
        self._each(sorted((root / "cand_pool").glob("*/*.jsonl")), self._pool)
        self.pool_dids.freeze()
        for ids in self.local_pools.values():
            ids.freeze()
        self._each(sorted((root / "query").glob("*/*.jsonl")), self._queries)
        self._each(sorted((root / "qrels").glob("*/*.txt")), self._qrels)
        self._missing_qrels()
        if self.check_images:
            self._images()
        r.counts["images"] = len(self.images)
        return r

    def _each(self, files: list[Path], check: Callable[[Path], None]) -> None:
        """A file that cannot be opened at all is one error, and the other files are still checked."""
        for path in files:
            try:
                check(path)
            except DataError as exc:
                self.report.error(exc.path, exc.line, exc.cause)

    # ---------------------------------------------------------- instructions
    def _instructions(self) -> None:
        path = self.root.instructions_file
        if not path.exists():
            self.report.error(path, None, "instructions TSV is missing")
            return
        try:
            self.instructions = InstructionTable.load(path)
        except DataError as exc:
            self.report.error(exc.path, exc.line, exc.cause)

    # ---------------------------------------------------------------- images
    def _image_ref(self, rel: str | None, path: Path, line: int) -> None:
        if not rel or rel in self.images:  # resolved once (an image is a candidate and a query of 2-3 tasks)
            return
        try:
            self.image_root.resolve(rel)
        except ImageLoadError as exc:
            self.report.error(path, line, str(exc))
            return
        self.images.setdefault(rel, (path, line))

    def _images(self) -> None:
        imported = (self.root.path / DATASETS_FILE).is_file()

        def check(item: tuple[str, tuple[Path, int]]) -> tuple[str, Path, int, str | None]:
            rel, (path, line) = item
            try:
                open_image(self.root.path / rel)
            except ImageLoadError as exc:
                return rel, path, line, str(exc)
            named = CONTENT_NAMED_IMAGE.match(rel) if imported else None
            if named and file_digest(self.root.path / rel) != named["digest"]:
                return rel, path, line, ("its bytes no longer hash to its name: changed since `rare import` "
                                         "(a hard-linked input edited in place? import again, or with --copy)")
            return rel, path, line, None

        with ThreadPoolExecutor(max_workers=4) as pool:
            for rel, path, line, err in pool.map(check, self.images.items(), chunksize=64):
                if err:
                    self.report.error(path, line, f"image {rel!r}: {err}")

    # ----------------------------------------------------------------- pools
    def _pool(self, path: Path) -> None:
        r = self.report
        seen = _IdSet() if path.parent.name == "local" else None
        dids_here: set[str] = set()
        n = 0
        for line, obj in _records(r, path):
            try:
                cand = parse_candidate(obj)
            except ValueError as exc:
                r.error(path, line, str(exc))
                continue
            n += 1
            if cand.did in dids_here:
                r.error(path, line, f"duplicate did {cand.did!r}")
            dids_here.add(cand.did)
            self.pool_dids.add(cand.did)
            if seen is not None:
                seen.add(cand.did)
            self._image_ref(cand.img_path, path, line)
        if n == 0:
            r.error(path, None, "candidate pool is empty")
        r.counts["candidates"] = r.counts.get("candidates", 0) + n
        m = re.match(r"^mbeir_(.+_task\d+)(?:_(?:val|test))?_cand_pool\.jsonl$", path.name)
        if seen is not None and m:
            key = m.group(1)
            self.local_pool_files.setdefault(key, []).append(path)
            if key in self.local_pools:  # MSCOCO: split-specific pools share the task
                for did in dids_here:
                    self.local_pools[key].add(did)
            else:
                self.local_pools[key] = seen

    # --------------------------------------------------------------- queries
    def _queries(self, path: Path) -> None:
        r = self.report
        split = path.parent.name
        upsampled = bool(_UPSAMPLED.search(path.name))
        qf = _QueryFile(path, split)
        m = re.match(r"^mbeir_(.+_task\d+)_(?:val|test)\.jsonl$", path.name)
        local = self.local_pools.get(m.group(1)) if m else None
        local_files = ", ".join(str(f) for f in self.local_pool_files.get(m.group(1), [])) if m else ""
        n, first = 0, len(r.problems)
        positives: list[tuple[int, str, int, str]] = []  # (line, qid, the qid's dataset id, did)
        groups_missing: set[tuple[int, str, str]] = set()
        for line, obj in _records(r, path):
            try:
                q = parse_query(obj)
            except ValueError as exc:
                r.error(path, line, str(exc))
                continue
            n += 1
            if q.qid in qf.positives and not upsampled:
                r.error(path, line, f"duplicate qid {q.qid!r} (first on line {qf.positives[q.qid][0]})")
            qf.positives.setdefault(q.qid, (line, frozenset(q.pos), q.task_id))
            expected_qmod = TASKS[q.task_id][0]
            if q.modality != expected_qmod:
                r.error(path, line, f"query_modality {q.modality!r} does not match task {q.task_id} ({expected_qmod!r})")
            self._image_ref(q.img_path, path, line)
            q_ds = dataset_id_of(q.qid)
            positives += [(line, q.qid, q_ds, did) for did in q.pos]
            if len(positives) >= 1 << 16:  # bounded memory on M-BEIR's 1.1M-query union file
                self._positives(path, positives, local, local_files)
                positives.clear()
            if self.instructions is not None:
                group = (q_ds, q.modality, TASKS[q.task_id][1])
                if group not in self.instructions.prompts and group not in groups_missing:
                    groups_missing.add(group)
                    r.error(path, line, f"no instruction for (dataset {group[0]}, {group[1]} -> {group[2]}) "
                                          f"in {self.root.instructions_file}")
        self._positives(path, positives, local, local_files)
        r.problems[first:] = sorted(r.problems[first:], key=lambda p: p.line or 0)  # in line order, as found
        if n == 0:
            r.warn(path, None, "query file is empty")
        r.counts["queries"] = r.counts.get("queries", 0) + n
        if not upsampled and path.parent.name != "union_train":
            self.query_files.append(qf)

    def _positives(self, path: Path, positives: list[tuple[int, str, int, str]], local: _IdSet | None,
                   local_files: str) -> None:
        """Every positive of a query file in a pool, and in its local pool (looked up together: a file holds
        hundreds of thousands)."""
        r = self.report
        dids = [did for *_, did in positives]
        in_pool = self.pool_dids.contains(dids)
        in_local = local.contains(dids) if local is not None else in_pool
        for (line, qid, q_ds, did), pooled, near in zip(positives, in_pool, in_local):
            if not pooled:
                r.error(path, line, f"positive {did!r} of {qid!r} is in no candidate pool")
            elif not near:
                if _safe_ds(did) == q_ds:
                    r.error(path, line, f"positive {did!r} of {qid!r} is missing from its local pool {local_files}")
                else:
                    r.warn(path, line, f"cross-dataset positive {did!r} of {qid!r} is unreachable in the local pool")

    # ----------------------------------------------------------------- qrels
    def _qrels(self, path: Path) -> None:
        r = self.report
        m = _QRELS.match(path.name)
        if not m:
            r.warn(path, None, "unrecognised qrels file name (expected mbeir_<name>_<split>_qrels.txt)")
            return
        split = m["split"]
        suffix = f"_{split}.jsonl"
        qpath = path.parent.parent.parent / "query" / split / f"mbeir_{m['stem']}{suffix}"
        qf = next((f for f in self.query_files if f.path == qpath), None)
        if qf is None:
            r.error(path, None, f"no matching query file {qpath}")
            return
        got: dict[str, set[str]] = {}
        first_line: dict[str, int] = {}
        for line, qid, did, relevant, task in iter_qrels(path, lambda exc: r.error(exc.path, exc.line, exc.cause)):
            if task not in TASKS:
                r.error(path, line, f"task_id {task!r} is not one of {sorted(TASKS)}")
                continue
            if qid not in qf.positives:
                r.error(path, line, f"qid {qid!r} is not in {qpath.name}")
                continue
            if task != qf.positives[qid][2]:
                r.error(path, line, f"task_id {task} disagrees with the query's task_id {qf.positives[qid][2]}")
            if relevant:
                got.setdefault(qid, set()).add(did)
                first_line.setdefault(qid, line)
        for qid, (qline, pos, _task) in qf.positives.items():
            have = got.get(qid, set())
            if have != set(pos):
                only_q, only_r = sorted(set(pos) - have), sorted(have - set(pos))
                r.error(qpath, qline, f"pos_cand_list of {qid!r} disagrees with {path.name}: "
                        f"only in pos_cand_list {only_q}, only in qrels {only_r}")
        qf.has_qrels = True

    def _missing_qrels(self) -> None:
        for qf in self.query_files:
            if qf.split in ("val", "test") and not qf.has_qrels:
                self.report.error(qf.path, None, "no qrels file for this query file")


def _safe_ds(did: str) -> int | None:
    try:
        return dataset_id_of(did)
    except ValueError:
        return None


def validate_root(root: str | Path, check_images: bool = True) -> Report:
    return _Validator(Path(root), check_images).run()


def print_report(report: Report, max_report: int = 200) -> None:
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True, highlight=False)
    for p in report.problems[:max_report]:
        style = "red" if p.severity == "error" else "yellow"
        console.print(f"[{style}]{p}[/]")
    hidden = len(report.problems) - max_report
    if hidden > 0:
        console.print(f"... and {hidden} more")
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report.counts.items()))
    if report.errors and not counts:  # nothing could be read: the error lines say why, a verdict would repeat it
        return
    verdict = "[red]FAILED[/]" if report.errors else "[green]OK[/]"
    checked = f"; checked {counts}" if counts else ""
    console.print(f"{verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s){checked}")
