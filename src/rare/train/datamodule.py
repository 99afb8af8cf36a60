"""Training pairs (query, positive candidate) read from an M-BEIR root through the data layer.

The variant only decides which file each side is read from (raw, or its enhanced mirror) and
how texts combine (``rare.data.views``); the queries, their order, the sampler, the positive
drawn per epoch and the instruction per query are the same for every variant, because the
enhanced files keep the raw records and their order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from rare.config.train import TrainParams
from rare.data.columnar import ColumnarPool
from rare.data.images import load_image
from rare.data.input_error import DataError
from rare.data.instructions import InstructionTable, stable_index
from rare.data.layout import MBEIRRoot
from rare.data.views import candidate_text, query_text, side_file
from rare.mbeir import TASKS, dataset_id_of
from rare.model.preprocess import Collator, EncodeInput
from rare.train.querytable import QueryTable

Key = tuple[int, int]  # (row in the dataset, epoch): the epoch picks the positive, as UniIR re-draws it


@dataclass(frozen=True)
class TextSettings:
    enhanced_query: bool
    enhanced_corpus: bool
    query_mode: str
    corpus_mode: str
    instruction_seed: int
    seed: int


@dataclass(frozen=True)
class Pair:
    qid: str
    did: str
    query_text: str
    query_image: str | None
    cand_text: str
    cand_image: str | None


class PairDataset(Dataset):
    """Queries from one or more files, each paired with the pool its positives are looked up in."""

    def __init__(self, parts: Sequence[tuple[QueryTable, ColumnarPool]], instructions: InstructionTable,
                 images_root: Path, text: TextSettings):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(q) for q, _ in self.parts])
        self.instructions = instructions
        self.images_root = images_root
        self.text = text

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def pair(self, index: int, epoch: int = 0) -> Pair:
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        queries, pool = self.parts[part]
        q = queries.row(index - int(self.offsets[part]))
        present = [d for d in q.pos if pool.index_of(d, missing_ok=True) >= 0]
        if not present:
            raise DataError(queries.source, None, f"query {q.qid}: none of its positives {q.pos} is in {pool.source}")
        did = present[stable_index(f"{self.text.seed}:{epoch}:{q.qid}", len(present))]
        cand = pool.get(did)
        instruction = self.instructions.choose(q.qid, dataset_id_of(q.qid), q.modality, TASKS[q.task_id][1],
                                               seed=self.text.instruction_seed)
        return Pair(
            qid=q.qid, did=did,
            query_text=query_text(q, instruction, self.text.enhanced_query, self.text.query_mode),
            query_image=q.img_path,
            cand_text=candidate_text(cand, self.text.enhanced_corpus, self.text.corpus_mode),
            cand_image=cand.img_path,
        )

    def __getitem__(self, key: Key) -> tuple[EncodeInput, EncodeInput]:
        p = self.pair(*key)
        return (EncodeInput(p.query_text, self._image(p.query_image)),
                EncodeInput(p.cand_text, self._image(p.cand_image)))

    def _image(self, rel: str | None) -> Image.Image | None:
        return load_image(self.images_root, rel) if rel else None


class EpochBatchSampler:
    """Deterministic global batches, split across ranks, resumable mid-epoch.

    Global batch s of epoch e is ``perm_e[s*G:(s+1)*G]`` with G = batch_size x world_size and
    ``perm_e`` seeded by (seed, e); rank r takes its r-th slice. So one process with batch G sees
    exactly what W ranks see together, and a run resumed at step k continues with batch k.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = True, limit: int | None = None, reshuffle: bool = True):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.drop_last, self.reshuffle = shuffle, drop_last, reshuffle
        self.limit = min(n, limit) if limit else n
        self.epoch = 0
        self._resume_step = 0

    @property
    def sampler(self) -> EpochBatchSampler:
        """Lightning calls ``set_epoch`` on ``loader.batch_sampler.sampler``, not on the batch sampler."""
        return self

    def set_epoch(self, epoch: int) -> None:
        if self.reshuffle:
            self.epoch = epoch

    def resume(self, global_step: int) -> None:
        """``global_step`` batches are already trained: the epoch they end in starts after them."""
        self._resume_step = global_step

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.limit)
        rng = np.random.default_rng([self.seed, self.epoch])
        return rng.permutation(self.n)[: self.limit]

    def __len__(self) -> int:
        g = self.batch_size * self.world_size
        return self.limit // g if self.drop_last else -(-(self.limit // self.world_size * self.world_size) // g)

    def __iter__(self) -> Iterator[list[Key]]:
        order, g, n_batches = self._order(), self.batch_size * self.world_size, len(self)
        skip = min(max(self._resume_step - self.epoch * n_batches, 0), n_batches)
        for s in range(skip, n_batches):
            batch = order[s * g:(s + 1) * g]
            batch = batch[: len(batch) // self.world_size * self.world_size]  # equal shapes for all_gather
            mine = np.array_split(batch, self.world_size)[self.rank]
            yield [(int(i), self.epoch) for i in mine]


class PairCollator:
    def __init__(self, collator: Collator):
        self.collator = collator

    def __call__(self, items: Sequence[tuple[EncodeInput, EncodeInput]]) -> dict[str, dict[str, torch.Tensor]]:
        return {"query": self.collator([q for q, _ in items]), "cand": self.collator([c for _, c in items])}


@dataclass(frozen=True)
class Inputs:
    """The files one variant trains on: the raw layout with enhanced mirrors swapped in per side."""

    train: list[Path]
    train_pool: Path
    val: list[tuple[Path, Path]]  # (query file, candidate pool)


def resolve_inputs(raw: MBEIRRoot, params: TrainParams, corpus_enhanced: Path | None,
                   queries_enhanced: Path | None) -> Inputs:
    """A side reads its enhanced mirror exactly when its enhanced folder is given."""
    use_corpus, use_query = corpus_enhanced is not None, queries_enhanced is not None
    if params.train_file == "union":
        train = [raw.union_train_file]
    else:
        train = raw.train_files()
    for f in [*train, raw.global_pool("train"), raw.instructions_file]:
        if not f.exists():
            raise DataError(f, None, "missing from the M-BEIR root; training needs it")
    if not train:
        raise DataError(raw.path / "query/train", None, "no mbeir_*_train.jsonl files")

    def q(path: Path) -> Path:
        return side_file(raw, queries_enhanced, path, use_query)

    def c(path: Path) -> Path:
        return side_file(raw, corpus_enhanced, path, use_corpus)

    if raw.union_val_file.exists() and raw.global_pool("val").exists():
        val = [(q(raw.union_val_file), c(raw.global_pool("val")))]
    else:
        val = [(q(raw.query_file("val", dt.dataset, dt.task_id)), c(raw.local_pool(dt, "val")))
               for dt in raw.eval_tasks("val")]
    return Inputs(train=[q(f) for f in train], train_pool=c(raw.global_pool("train")), val=val)


class PairDataModule(pl.LightningDataModule):
    def __init__(self, raw: MBEIRRoot, inputs: Inputs, text: TextSettings, params: TrainParams, collator: Collator):
        super().__init__()
        self.raw, self.inputs, self.text, self.params = raw, inputs, text, params
        self.collate = PairCollator(collator)
        self.train_set: PairDataset | None = None
        self.val_set: PairDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        cache = Path(self.params.cache_dir) / "arrow"
        instructions = InstructionTable.load(self.raw.instructions_file)
        pool = ColumnarPool.open(self.inputs.train_pool, cache)
        self.train_set = PairDataset([(QueryTable.open(f, cache), pool) for f in self.inputs.train],
                                     instructions, self.raw.path, self.text)
        if self.inputs.val:
            pools: dict[Path, ColumnarPool] = {}
            parts = []
            for qf, pf in self.inputs.val:
                if pf not in pools:
                    pools[pf] = ColumnarPool.open(pf, cache)
                parts.append((QueryTable.open(qf, cache), pools[pf]))
            self.val_set = PairDataset(parts, instructions, self.raw.path, self.text)

    def _loader(self, dataset: PairDataset, sampler: EpochBatchSampler) -> DataLoader:
        workers = self.params.num_workers
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=self.collate, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                          generator=torch.Generator().manual_seed(self.params.seed))

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        rank, world = self._rank()
        sampler = EpochBatchSampler(len(self.train_set), self.params.batch_size, self.params.seed, rank, world)
        if self.trainer is not None:  # restored from a checkpoint by now: continue after the trained batches
            sampler.resume(self.trainer.global_step)
        return self._loader(self.train_set, sampler)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        rank, world = self._rank()
        sampler = EpochBatchSampler(len(self.val_set), self.params.batch_size, self.params.seed, rank, world,
                                    drop_last=False, limit=self.params.val_max_queries, reshuffle=False)
        return self._loader(self.val_set, sampler)
