"""Where each M-BEIR file lives under a root; the same names for real M-BEIR and the embedded benchmark."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from rare import mbeir
from rare.mbeir import Dataset, DatasetTask, Probe, register

SPLITS = ("train", "val", "test")
POINTER_FILE = "mbeir_root.json"  # written by `rare data` for an external (real) M-BEIR root
DATASETS_FILE = "datasets.json"  # written by `rare import`: the imported datasets' names and ids
# `rare import` names each image by its content hash (file_digest): content_named_image() writes the name,
# CONTENT_NAMED_IMAGE reads the hash back from it (`rare validate` checks the bytes against it)
CONTENT_NAMED_IMAGE = re.compile(r"^mbeir_images/[a-z0-9]+_images/(?P<head>[0-9a-f]{2})/(?P<digest>(?P=head)[0-9a-f]{30})\.\w+$")


def content_named_image(dataset: str, digest: str, ext: str) -> str:
    return f"mbeir_images/{dataset}_images/{digest[:2]}/{digest}.{ext}"
_EVAL_QUERY = re.compile(r"^mbeir_(?P<ds>[a-z0-9]+)_task(?P<task>\d+)_(?P<split>val|test)\.jsonl$")


@dataclass(frozen=True)
class MBEIRRoot:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        register_imported(self.path)

    @classmethod
    def open(cls, path: str | Path) -> MBEIRRoot:
        """Follow the pointer the data stage leaves for an external M-BEIR root (169 GB is never copied)."""
        path = Path(path)
        pointer = path / POINTER_FILE
        if pointer.exists():
            return cls(Path(json.loads(pointer.read_text(encoding="utf-8"))["root"]))
        return cls(path)

    # queries -------------------------------------------------------------
    def query_file(self, split: str, dataset: str, task_id: int | None = None) -> Path:
        if split == "train":
            return self.path / "query/train" / f"mbeir_{dataset}_train.jsonl"
        if task_id is None:
            raise ValueError(f"{split} query files are per task: pass task_id for {dataset}")
        return self.path / "query" / split / f"mbeir_{dataset}_task{task_id}_{split}.jsonl"

    @property
    def union_train_file(self) -> Path:
        return self.path / "query/union_train/mbeir_union_up_train.jsonl"

    @property
    def union_val_file(self) -> Path:
        return self.path / "query/union_val/mbeir_union_val.jsonl"

    def train_files(self) -> list[Path]:
        return sorted((self.path / "query/train").glob("mbeir_*_train.jsonl"))

    # candidate pools ------------------------------------------------------
    def local_pool(self, dt: DatasetTask, split: str = "test") -> Path:
        """MSCOCO keeps separate val/test pools (``_test_`` in the name); every other pool is shared."""
        local = self.path / "cand_pool/local"
        split_specific = local / f"mbeir_{dt.dataset}_task{dt.task_id}_{split}_cand_pool.jsonl"
        if split_specific.exists():
            return split_specific
        return local / f"mbeir_{dt.dataset}_task{dt.task_id}_cand_pool.jsonl"

    def global_pool(self, split: str = "test") -> Path:
        return self.path / "cand_pool/global" / f"mbeir_union_{split}_cand_pool.jsonl"

    def local_pools(self) -> list[Path]:
        return sorted((self.path / "cand_pool/local").glob("mbeir_*_cand_pool.jsonl"))

    # qrels, instructions, images -------------------------------------------
    def qrels_file(self, split: str, dt: DatasetTask | str) -> Path:
        stem = dt.name if isinstance(dt, DatasetTask) else dt
        return self.path / "qrels" / split / f"mbeir_{stem}_{split}_qrels.txt"

    @property
    def instructions_file(self) -> Path:
        return self.path / "instructions/query_instructions.tsv"

    @property
    def images_dir(self) -> Path:
        return self.path / "mbeir_images"

    def eval_tasks(self, split: str = "test") -> list[DatasetTask]:
        """The dataset-tasks that have a query file for ``split``, in M-BEIR's table order (task, then dataset id)."""
        found = []
        for f in (self.path / "query" / split).glob("mbeir_*_task*_*.jsonl"):
            m = _EVAL_QUERY.match(f.name)
            if m and m["split"] == split:
                found.append(DatasetTask(m["ds"], int(m["task"])))

        def order(dt: DatasetTask) -> tuple[int, int, str]:
            info = mbeir.DATASET_BY_NAME.get(dt.dataset) or mbeir.IMPORTED.get(dt.dataset)
            return (dt.task_id, info.id if info else 1_000, dt.dataset)

        return sorted(found, key=order)


def register_imported(root: Path) -> None:
    """Every reader opens a root through MBEIRRoot, so the datasets an import declared are known to all."""
    path = root / DATASETS_FILE
    if not path.is_file():
        return
    for d in json.loads(path.read_text(encoding="utf-8"))["datasets"]:
        register(Dataset(d["name"], int(d["id"]), Probe(d.get("probe", Probe.PLAIN.value)), int(d.get("headline_k", 5))))
