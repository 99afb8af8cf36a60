"""The M-BEIR vocabulary: datasets, tasks, modalities and the evaluated dataset-tasks.

Real M-BEIR and the embedded benchmark share one registry so that every stage reads both
through the same code path; the embedded datasets take ids 10+ so an id is never ambiguous.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum

MODALITIES = ("text", "image", "image,text")


class Probe(str, Enum):
    """What a dataset probes; the report groups dataset-tasks by it."""

    KNOWLEDGE = "knowledge-intensive"
    COMPOSITIONAL = "compositional"
    PLAIN = "plain"


@dataclass(frozen=True)
class Dataset:
    name: str
    id: int
    probe: Probe
    headline_k: int = 5  # M-BEIR reports R@10 for the fashion datasets, R@5 elsewhere


MBEIR_DATASETS: tuple[Dataset, ...] = (
    Dataset("visualnews", 0, Probe.PLAIN),
    Dataset("fashion200k", 1, Probe.PLAIN, headline_k=10),
    Dataset("webqa", 2, Probe.PLAIN),
    Dataset("edis", 3, Probe.PLAIN),
    Dataset("nights", 4, Probe.PLAIN),
    Dataset("oven", 5, Probe.KNOWLEDGE),
    Dataset("infoseek", 6, Probe.KNOWLEDGE),
    Dataset("fashioniq", 7, Probe.COMPOSITIONAL, headline_k=10),
    Dataset("cirr", 8, Probe.COMPOSITIONAL),
    Dataset("mscoco", 9, Probe.PLAIN),
)


@functools.cache
def _registry() -> dict[str, object]:
    """M-BEIR's datasets, then the embedded benchmark's, each declared by its own module
    (``rare.benchmark.datasets``; ids 10+). Read on first use: those modules import this one."""
    from rare.benchmark.datasets import EMBEDDED

    datasets = MBEIR_DATASETS + tuple(spec.dataset for spec in EMBEDDED)
    return {"DATASETS": datasets, "DATASET_BY_NAME": {d.name: d for d in datasets},
            "DATASET_BY_ID": {d.id: d for d in datasets}}


def __getattr__(name: str) -> object:
    """``DATASETS``, ``DATASET_BY_NAME`` and ``DATASET_BY_ID``, built on first use (PEP 562)."""
    if name in ("DATASETS", "DATASET_BY_NAME", "DATASET_BY_ID"):
        return _registry()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Datasets a root brings itself (`rare import` writes them to the root's datasets.json; opening the root
# registers them). Ids of imported data start here, so they never clash with M-BEIR's or the benchmark's.
FIRST_IMPORTED_ID = 100
IMPORTED: dict[str, Dataset] = {}


def register(ds: Dataset) -> None:
    """Make an imported dataset known by name and id; a name or id of the fixed table is refused."""
    fixed = _registry()["DATASET_BY_NAME"].get(ds.name) or _registry()["DATASET_BY_ID"].get(ds.id)  # type: ignore[attr-defined]
    if fixed is not None:
        raise ValueError(f"dataset {ds.name!r} (id {ds.id}) clashes with the built-in dataset {fixed.name!r} "
                         f"(id {fixed.id})")
    IMPORTED[ds.name] = ds


# task id -> (query modality, candidate modality); 5 is unused in M-BEIR.
TASKS: dict[int, tuple[str, str]] = {
    0: ("text", "image"),
    1: ("text", "text"),
    2: ("text", "image,text"),
    3: ("image", "text"),
    4: ("image", "image"),
    6: ("image,text", "text"),
    7: ("image,text", "image"),
    8: ("image,text", "image,text"),
}


@dataclass(frozen=True, order=True)
class DatasetTask:
    """One evaluated (dataset, task) pair, e.g. ``cirr_task7``."""

    dataset: str
    task_id: int

    @property
    def name(self) -> str:
        return f"{self.dataset}_task{self.task_id}"

    @property
    def info(self) -> Dataset:
        return dataset(self.dataset)

    @property
    def headline_k(self) -> int:
        return self.info.headline_k

    @property
    def ks(self) -> tuple[int, int, int]:
        """The three cutoffs M-BEIR reports: 1/5/10, or 10/20/50 where R@10 is the headline."""
        return (10, 20, 50) if self.headline_k == 10 else (1, 5, 10)

    @classmethod
    def parse(cls, name: str) -> DatasetTask:
        ds, sep, task = name.rpartition("_task")
        if not sep or not task.isdigit():
            raise ValueError(f"not a dataset-task name: {name!r} (expected '<dataset>_task<k>')")
        return cls(ds, int(task))


MBEIR_EVAL_TASKS: tuple[DatasetTask, ...] = tuple(
    DatasetTask.parse(n)
    for n in (
        "visualnews_task0 mscoco_task0 fashion200k_task0 webqa_task1 edis_task2 webqa_task2 "
        "visualnews_task3 mscoco_task3 fashion200k_task3 nights_task4 oven_task6 infoseek_task6 "
        "fashioniq_task7 cirr_task7 oven_task8 infoseek_task8"
    ).split()
)


def dataset(name_or_id: str | int) -> Dataset:
    """Look a dataset up by name or numeric id, failing with the allowed values."""
    table: dict = _registry()["DATASET_BY_ID" if isinstance(name_or_id, int) else "DATASET_BY_NAME"]  # type: ignore[assignment]
    found = table.get(name_or_id)
    if found is None:
        found = next((d for d in IMPORTED.values() if name_or_id in (d.name, d.id)), None)
    if found is None:
        raise KeyError(f"unknown dataset {name_or_id!r}; known: {sorted(table)}, imported: {sorted(IMPORTED)}")
    return found


def dataset_id_of(record_id: str) -> int:
    """The dataset id is the prefix of a qid/did ("9:123" -> 9)."""
    head, sep, _ = record_id.partition(":")
    if not sep or not (head.isascii() and head.isdigit()):
        raise ValueError(f"id {record_id!r} is not of the form '<dataset_id>:<n>'")
    return int(head)
