"""Rows in, an M-BEIR root out: images checked and deduplicated by content hash, splits and ids drawn from
content hashes (so neither a rerun nor a reordered input moves an item), and every file written into a
temp sibling of the output that replaces it only when whole and valid (``rare.atomic.replacing_folder``):
a killed import leaves the previous root, and the next run removes the dead one's temp folder.

Per dataset (one per source), from its items' (image, text, group):
  task 0 text->image and task 3 image->text: every item is a query; its positives are the candidates of
  every item sharing its group (itself when it has none);
  task 4 image->image, where a group holds two or more items of a split: the group's first item (by
  content hash) is the query, the others' images its positives; evaluated only where the test split has
  ``min_i2i_queries`` such groups (train keeps them all).
Val/test candidates go to one local pool per task (disjoint dids, concatenated into the global pool);
train candidates to the training pool; train queries to ``query/train`` and the union training file.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import re
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rare.atomic import replacing_folder
from rare.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, decode
from rare.data.instructions import HEADER
from rare.data.layout import DATASETS_FILE, MBEIRRoot, content_named_image
from rare.data.qrels import qrels_line
from rare.data.records import write_jsonl
from rare.hashing import bytes_digest
from rare.ingest.formats import detect_format
from rare.ingest.rows import Rejected, Row, Where
from rare.mbeir import FIRST_IMPORTED_ID, TASKS, DatasetTask

SPLITS = ("train", "val", "test")
NAME = re.compile(r"^[a-z0-9]+$")  # the layout's file-name rule for dataset names
EXT = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}
MANIFEST = "import.json"
REJECTED = "import_rejected.txt"
INSTRUCTIONS: dict[int, tuple[str, str, str, str]] = {
    0: ("Find an image that matches the given caption.", "Retrieve the picture this text describes.",
        "Identify the image described by this text.", "Show me an image that fits this description."),
    3: ("Find a caption that describes this image.", "Retrieve the text written for this picture.",
        "Identify the description that matches this image.", "Find text that describes what this image shows."),
    4: ("Find an image of the same subject as this one.", "Retrieve another picture of what this image shows.",
        "Identify an image in the same group as this one.", "Find a similar image of the same thing."),
}


@dataclass(frozen=True)
class Source:
    name: str  # dataset name in file names: lowercase letters and digits
    path: Path
    format: str | None = None  # None: recognised from the path

    @classmethod
    def parse(cls, spec: str, fmt: str | None = None) -> Source:
        """``name=path`` or a bare path (the name is then the path's stem, letters and digits only)."""
        name, sep, path = spec.partition("=")
        if not sep:
            path, name = spec, re.sub(r"[^a-z0-9]", "", Path(spec.rstrip("/")).name.split(".")[0].lower())
        if not NAME.match(name):
            raise ValueError(f"{spec}: dataset name {name!r} must be lowercase letters and digits (name=PATH)")
        return cls(name, Path(path), fmt)


@dataclass(frozen=True)
class ImportOptions:
    val: float = 0.1  # share of items (of groups, where given) held out for validation
    test: float = 0.2
    seed: int = 0  # salts the split hash: another seed, another split
    first_id: int = FIRST_IMPORTED_ID  # dataset id of the first source; the next ones count up
    max_pixels: int = DEFAULT_MAX_PIXELS
    limit: int | None = None  # keep at most this many items per source (the first in content-hash order)
    min_i2i_queries: int = 10  # image->image is evaluated only with this many test queries (groups) or more
    validate: bool = True  # run `rare validate`'s checks on the records before the swap (images were checked)
    link: bool = True  # hard-link an image file into the root where the file system allows it, else copy it

    def __post_init__(self) -> None:
        if not (0 <= self.val < 1 and 0 < self.test < 1 and self.val + self.test < 1):
            raise ValueError(f"split shares val={self.val}, test={self.test}: need 0 <= val, 0 < test, val + test < 1")


@dataclass(frozen=True)
class ImportItem:
    digest: str
    text: str
    group: str | None
    rel: str  # image path under the root
    where: Where


@dataclass
class ImportResult:
    root: Path
    items: dict[str, int] = field(default_factory=dict)  # dataset -> accepted items
    rows: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)


def split_of(item: ImportItem, options: ImportOptions) -> str:
    """A group stays in one split (no query meets its group's other members in training)."""
    key = f"g:{item.group}" if item.group is not None else f"i:{item.digest}"
    h = hashlib.blake2b(f"{options.seed}:{key}".encode(), digest_size=8).digest()
    u = int.from_bytes(h, "big") / 2**64
    return "test" if u < options.test else "val" if u < options.test + options.val else "train"


def _linked(source: Path, target: Path, read: os.stat_result) -> bool:
    """Hard-link ``source`` (stat ``read`` when its bytes were read and checked) as ``target``: a new file
    costs as much as decoding the image on some file systems, a link a few microseconds. False (copy it
    instead) on another file system, where links are not allowed, or when the file changed since it was read.
    The root then shares the file with the input: `rare validate` finds one edited in place (its name is its
    content hash); `rare import --copy` writes copies instead."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:
        return False
    now = os.stat(target)
    if (now.st_ino, now.st_size, now.st_mtime_ns) != (read.st_ino, read.st_size, read.st_mtime_ns):
        target.unlink()
        return False
    return True


@dataclass(frozen=True)
class _Checked:
    """A row's image after the worker's checks: its digest and file name, or why it was refused."""

    row: Row
    digest: str | None = None
    rel: str | None = None
    cause: str | None = None


class _Collector:
    """Checks each row's image: readable, an image, not seen before; its bytes land under the root.

    Reading, hashing, decoding and writing (a hard link where it can) run in a few threads, in batches of
    rows (file I/O and Pillow's decoder release the GIL), a bounded window ahead of the rows being taken in
    input order; the first row with some content keeps it, so which duplicate is refused never depends on
    timing. Equal contents share one file name, so a duplicate's write is refused by the exclusive create and
    never touches the first copy."""

    BATCH = 16  # rows per task: a task per row costs the main thread as much as a worker's check
    WINDOW = 8  # tasks (batches or rejections) ahead of the row being taken

    def __init__(self, tmp: Path, options: ImportOptions, on_reject: Callable[[Rejected], None], workers: int = 4):
        self.tmp, self.options, self.on_reject = tmp, options, on_reject
        self.seen: dict[str, Where] = {}
        self.result = ImportResult(tmp)
        self.folders: set[str] = set()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rare-import")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def reject(self, where: Where, cause: str) -> None:
        r = Rejected(where, cause)
        self.result.rejected.append(r)
        self.on_reject(r)

    def _check(self, name: str, row: Row) -> _Checked:
        try:
            source = os.stat(row.source) if self.options.link and row.source is not None else None
            data = row.image()
        except FileNotFoundError:
            return _Checked(row, cause=f"image {row.image_name} not found")
        except OSError as exc:
            return _Checked(row, cause=f"image {row.image_name} cannot be read ({exc.strerror or exc})")
        digest = bytes_digest(data)
        try:
            img = decode(io.BytesIO(data), row.image_name, self.options.max_pixels)
        except ImageLoadError as exc:
            return _Checked(row, digest, cause=f"not a usable image: {exc}")
        rel = content_named_image(name, digest, EXT.get(img.format or "", "img"))
        folder = rel.rsplit("/", 1)[0]
        if folder not in self.folders:  # a set add is atomic under the GIL; mkdir tolerates a racing twin
            (self.tmp / folder).mkdir(parents=True, exist_ok=True)
            self.folders.add(folder)
        try:
            if source is None or not _linked(row.source, self.tmp / rel, source):
                with open(self.tmp / rel, "xb") as fh:
                    fh.write(data)
        except FileExistsError:
            pass  # the same bytes, from an earlier row
        return _Checked(row, digest, rel)

    def items(self, name: str, rows: Iterator[Row | Rejected], on_row: Callable[[], None]) -> Iterator[ImportItem]:
        window: deque[Future[list[_Checked]] | Rejected] = deque()
        batch: list[Row] = []

        def submit() -> None:
            if batch:
                window.append(self.pool.submit(lambda rows: [self._check(name, r) for r in rows], batch.copy()))
                batch.clear()

        def drain(keep: int) -> Iterator[ImportItem]:
            while len(window) > keep:
                head = window.popleft()
                if isinstance(head, Rejected):
                    on_row()
                    self.reject(head.where, head.cause)
                    continue
                for c in head.result():
                    on_row()
                    if c.digest is not None and c.digest in self.seen and c.cause is None:
                        self.reject(c.row.where, f"duplicate image {c.row.image_name} (same content as "
                                                 f"{self.seen[c.digest]})")
                    elif c.cause is not None:
                        self.reject(c.row.where, c.cause)
                    else:
                        assert c.digest is not None and c.rel is not None
                        self.seen[c.digest] = c.row.where
                        yield ImportItem(c.digest, c.row.text, c.row.group, c.rel, c.row.where)

        for row in rows:
            self.result.rows += 1
            if isinstance(row, Rejected):
                submit()  # the rows before it keep their place
                window.append(row)
            else:
                batch.append(row)
                if len(batch) == self.BATCH:
                    submit()
            yield from drain(self.WINDOW)
        submit()
        yield from drain(0)


@dataclass
class _Dataset:
    """One dataset's records as they are written: pools per task, queries per (split, task)."""

    name: str
    id: int
    pools: dict[int, list[dict]] = field(default_factory=lambda: defaultdict(list))
    train_pool: list[dict] = field(default_factory=list)
    queries: dict[tuple[str, int], list[dict]] = field(default_factory=lambda: defaultdict(list))
    _dids: int = 0
    _qids: int = 0

    def cand(self, item: ImportItem, modality: str) -> dict:
        self._dids += 1
        image = modality == "image"
        return {"did": f"{self.id}:{self._dids}", "txt": None if image else item.text,
                "img_path": item.rel if image else None, "modality": modality,
                "src_content": json.dumps({"group": item.group}) if item.group is not None else None}

    def query(self, split: str, task: int, item: ImportItem, pos: list[str]) -> None:
        self._qids += 1
        qmod = TASKS[task][0]
        self.queries[(split, task)].append({
            "qid": f"{self.id}:{self._qids}", "query_txt": item.text if qmod == "text" else None,
            "query_img_path": item.rel if qmod == "image" else None, "query_modality": qmod,
            "query_src_content": json.dumps({"group": item.group}) if item.group is not None else None,
            "pos_cand_list": pos, "neg_cand_list": [], "task_id": task})


def _groups(items: list[ImportItem]) -> dict[str, list[ImportItem]]:
    out: dict[str, list[ImportItem]] = defaultdict(list)
    for it in items:
        out[it.group if it.group is not None else f"\0{it.digest}"].append(it)
    return out


def _layout(name: str, ds_id: int, items: list[ImportItem], options: ImportOptions) -> _Dataset:
    ds = _Dataset(name, ds_id)
    by_split: dict[str, list[ImportItem]] = defaultdict(list)
    for it in sorted(items, key=lambda i: i.digest):
        by_split[split_of(it, options)].append(it)
    for split in SPLITS:
        members = by_split.get(split, [])
        if not members:
            continue
        groups = _groups(members)
        i2i_queries = {g[0].digest for g in groups.values() if len(g) > 1}
        if split == "train":
            image = {it.digest: ds.cand(it, "image") for it in members}
            text = {it.digest: ds.cand(it, "text") for it in members}
            ds.train_pool += [*image.values(), *text.values()]
            i2i = image
        else:
            image = {it.digest: ds.cand(it, "image") for it in members}
            text = {it.digest: ds.cand(it, "text") for it in members}
            i2i = {it.digest: ds.cand(it, "image") for it in members if it.digest not in i2i_queries}
            ds.pools[0] += image.values()
            ds.pools[3] += text.values()
            ds.pools[4] += i2i.values() if i2i_queries else []
        for it in members:
            group = groups[it.group if it.group is not None else f"\0{it.digest}"]
            ds.query(split, 0, it, [image[g.digest]["did"] for g in group])
            ds.query(split, 3, it, [text[g.digest]["did"] for g in group])
            if it.digest in i2i_queries:
                ds.query(split, 4, it, [i2i[g.digest]["did"] for g in group if g is not it])
    if len(ds.queries.get(("test", 4), [])) < options.min_i2i_queries:  # one query would swing the mean by itself
        ds.pools.pop(4, None)
        ds.queries.pop(("val", 4), None)
        ds.queries.pop(("test", 4), None)
    return ds


def _write(root: MBEIRRoot, datasets: list[_Dataset]) -> dict[str, Any]:
    """Instructions last: a root cut short by a kill has no instruction table and fails validation."""
    counts: dict[str, Any] = {"dataset_tasks": {}, "train_queries": {}}
    union: list[dict] = []
    for ds in datasets:
        train = [q for task in sorted(TASKS) for q in ds.queries.get(("train", task), [])]
        if train:
            write_jsonl(root.query_file("train", ds.name), train)
            _qrels(root.qrels_file("train", ds.name), train)
        union += train
        counts["train_queries"][ds.name] = len(train)
        for task, pool in sorted(ds.pools.items()):
            if not pool:
                continue
            dt = DatasetTask(ds.name, task)
            write_jsonl(root.local_pool(dt), pool)
            row = counts["dataset_tasks"][dt.name] = {"pool": len(pool)}
            for split in ("val", "test"):
                qs = ds.queries.get((split, task), [])
                if qs:
                    write_jsonl(root.query_file(split, ds.name, task), qs)
                    _qrels(root.qrels_file(split, dt), qs)
                row[split] = len(qs)
    counts["global_pool"] = write_jsonl(root.global_pool("test"), (c for ds in datasets for _, p in sorted(ds.pools.items())
                                                                   for c in p))
    counts["train_pool"] = write_jsonl(root.global_pool("train"), (c for ds in datasets for c in ds.train_pool))
    counts["union_train"] = write_jsonl(root.union_train_file, union)
    lines = ["\t".join(HEADER)]
    for ds in datasets:
        for task in sorted({t for (_s, t) in ds.queries}):
            lines.append("\t".join([*TASKS[task], ds.name, str(ds.id), *INSTRUCTIONS[task]]))
    root.instructions_file.parent.mkdir(parents=True, exist_ok=True)
    root.instructions_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return counts


def _qrels(path: Path, queries: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        fh.writelines(qrels_line(q["qid"], did, q["task_id"]) for q in queries for did in q["pos_cand_list"])


@contextmanager
def _kept_from_gc() -> Iterator[Callable[[], None]]:
    """Yields ``gc.freeze``: what the import has built by the time it is called (the items, then hundreds of
    thousands of record dicts) stays out of the cyclic collector's scans, which cost the import ~10 % of its
    time as the records grow and validation allocates; all of it is handed back at the end."""
    try:
        yield gc.freeze
    finally:
        gc.unfreeze()


def _rows(source: Source) -> Iterator[Row | Rejected]:
    return detect_format(source.path, source.format).reader(str(source.path))


def import_root(sources: list[Source], out: Path, options: ImportOptions = ImportOptions(),
                on_row: Callable[[], None] = lambda: None,
                on_reject: Callable[[Rejected], None] = lambda r: None) -> ImportResult:
    """Import ``sources`` (a dataset each) into the M-BEIR root ``out``, replacing it only on success."""
    from rare.validate import validate_root

    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must differ, got {names}")
    for s in sources:
        detect_format(s.path, s.format)  # an unsupported input fails before any work
    with (replacing_folder(Path(out)) as tmp, closing(_Collector(tmp, options, on_reject)) as collector,
          _kept_from_gc() as keep_from_gc):
        result = collector.result
        datasets, declared = [], []
        for i, source in enumerate(sources):
            items = list(collector.items(source.name, _rows(source), on_row))
            if options.limit is not None and len(items) > options.limit:
                keep = sorted(items, key=lambda it: it.digest)[: options.limit]
                for it in set(items) - set(keep):
                    (tmp / it.rel).unlink()
                items = keep
            if not items:
                raise ValueError(f"{source.path}: no usable rows ({len(result.rejected)} rejected so far)")
            ds = _layout(source.name, options.first_id + i, items, options)
            if not any(ds.pools.values()):
                raise ValueError(f"{source.path}: {len(items)} item(s) are too few to hold any out for val/test "
                                 f"(shares val={options.val}, test={options.test})")
            datasets.append(ds)
            keep_from_gc()
            result.items[source.name] = len(items)
            declared.append({"name": source.name, "id": ds.id, "probe": "plain", "headline_k": 5,
                             "source": str(source.path), "format": detect_format(source.path, source.format).name})
        (tmp / DATASETS_FILE).write_text(json.dumps({"datasets": declared}, indent=1) + "\n", encoding="utf-8")
        root = MBEIRRoot(tmp)  # registers the declared datasets
        result.counts = _write(root, datasets)
        (tmp / REJECTED).write_text("".join(f"{r}\n" for r in result.rejected), encoding="utf-8")
        manifest = {"datasets": declared, "items": result.items, "rows": result.rows, "rejected": len(result.rejected),
                    "counts": result.counts, "options": options.__dict__}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        report = validate_root(tmp, check_images=False) if options.validate else None
        if report is not None and report.errors:
            raise ValueError(f"imported root is invalid ({len(report.errors)} errors), first: {report.errors[0]}")
    result.root = Path(out)
    return result
