"""Embeddings of queries and candidate pools, computed once and kept as fp16 .npy files beside their ids.

A cache entry is keyed by (model fingerprint, content hash of the data file, text view, precision,
source of the code that builds the text and runs the model), so the inference-only evaluations
reuse the baseline's query or candidate embeddings, and rerunning an evaluation embeds nothing. Work is done in resumable shards: after a kill only unfinished shards
are recomputed, and under ``torchrun`` the ranks share the shards (``rare.evaluate.ranks``,
``rare.evaluate.shards``) with the vectors bit for bit a single process's. The global pool is assembled from the local pools' entries instead of being
embedded a second time (see ``pool_sources``).
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rare.atomic import temp_sibling
from rare.data.columnar import iter_pool_batches
from rare.data.images import load_image
from rare.data.input_error import DataError
from rare.data.instructions import InstructionTable
from rare.data.records import iter_candidates, iter_queries
from rare.data.views import TextMode, candidate_text, query_text
from rare.evaluate.ranks import Ranks
from rare.evaluate.shards import ShardStore, claim
from rare.failures import print_warning, worker_errors_unwrapped
from rare.hashing import code_digest, key_digest
from rare.manifest import MANIFEST_FILE, ManifestError, verify, write_folder_manifest
from rare.mbeir import TASKS, dataset_id_of

log = logging.getLogger(__name__)
# The source of these modules shapes the embeddings as much as the weights do: it is part of the cache key.
EMBEDDING_CODE = ("rare.model", "rare.data.views", "rare.data.instructions", "rare.data.images", __name__)


@dataclass(frozen=True)
class EmbedInput:
    """What the retriever encodes for one record."""

    id: str
    text: str
    image: str | None  # path relative to the data root


@dataclass(frozen=True)
class TextView:
    """How records become text: original or enhanced (replaced or appended), instructions for queries."""

    use_enhanced: bool
    mode: TextMode
    instructions: InstructionTable | None = None
    instructions_hash: str = ""
    instruction_seed: int = 0

    def describe(self) -> dict[str, Any]:
        return {"enhanced": self.use_enhanced, "mode": self.mode if self.use_enhanced else "-",
                "instructions": self.instructions_hash, "instruction_seed": self.instruction_seed}


@dataclass(frozen=True)
class Embeddings:
    """One cache entry: ``vectors.npy`` (fp16 [N, D]) and ``ids.npy`` in record order, and their manifest.

    Checked on every open: sizes and array shapes of both files (cheap at any size: the vectors are
    memory-mapped, never read whole just to be opened), and the sha256 of ``ids.npy``, which is read
    whole anyway."""

    dir: Path

    def check(self) -> None:
        """Raises ``ManifestError`` naming the file when the entry is incomplete or damaged."""
        manifest = verify(self.dir / MANIFEST_FILE, full={"ids.npy"})
        vectors, ids = manifest.files.get("vectors.npy"), manifest.files.get("ids.npy")
        if vectors is None or ids is None or vectors.shape is None or ids.shape is None:
            raise ManifestError(f"{self.dir / MANIFEST_FILE}: does not list vectors.npy and ids.npy")
        if vectors.shape[:1] != ids.shape[:1]:
            raise ManifestError(f"{self.vectors_path}: {vectors.shape[0]} rows for {ids.shape[0]} ids")

    @property
    def vectors_path(self) -> Path:
        return self.dir / "vectors.npy"

    def ids(self) -> np.ndarray:
        return np.load(self.dir / "ids.npy", allow_pickle=False)

    def vectors(self) -> np.ndarray:
        return np.load(self.vectors_path, mmap_mode="r", allow_pickle=False)


# CPU features under which oneDNN runs bf16 kernels (its own support check, read through torch's public CPU
# capabilities): the AVX-512 core set (native BF16 or AMX on top), AVX-NE-CONVERT, or Arm's BF16 extension.
CPU_BF16 = (("avx512_f", "avx512_bw", "avx512_vl", "avx512_dq"), ("avx_ne_convert",), ("bf16",))


def cpu_runs_bf16(capabilities: Mapping[str, Any] | None = None) -> bool:
    """Whether oneDNN runs bf16 on this CPU (``capabilities``: ``torch.cpu.get_capabilities()``)."""
    if not torch.backends.mkldnn.is_available():
        return False
    caps = torch.cpu.get_capabilities() if capabilities is None else capabilities
    return any(all(caps.get(flag) for flag in group) for group in CPU_BF16)


def resolve_precision(precision: str, device: str) -> str:
    """"auto" picks bf16 where the hardware runs it natively (CUDA, or a CPU oneDNN runs bf16 on)."""
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16"
    return "bf16" if cpu_runs_bf16() else "fp32"


@functools.cache
def code_version() -> str:
    """Hash of the code that turns records into embeddings, so editing it never serves stale vectors."""
    return code_digest(*(importlib.import_module(name) for name in EMBEDDING_CODE))


def cache_key(fingerprint: str, data_hash: str, side: str, view: TextView, precision: str, extra: str = "") -> str:
    return key_digest({"code": code_version(), "model": fingerprint, "data": data_hash, "side": side,
                       "view": view.describe(), "precision": precision, "extra": extra})


def query_items(path: Path, view: TextView) -> list[EmbedInput]:
    """Instruction + (original or enhanced) query text, as training builds it; the image when the query has one."""
    if view.instructions is None:
        raise ValueError("query embedding needs the instruction table")
    items = []
    for q in iter_queries(path):
        instruction = view.instructions.choose(q.qid, dataset_id_of(q.qid), q.modality, TASKS[q.task_id][1],
                                               view.instruction_seed)
        text = query_text(q, instruction, view.use_enhanced, view.mode)
        items.append(EmbedInput(q.qid, text, q.img_path if "image" in q.modality else None))
    return items


def pool_items(path: Path, view: TextView, only: set[str] | None = None) -> list[EmbedInput]:
    """Candidate text (original or enhanced, no instruction) and image; ``only`` keeps just those dids."""
    return [EmbedInput(c.did, candidate_text(c, view.use_enhanced, view.mode), c.img_path if "image" in c.modality else None)
            for c in iter_candidates(path) if only is None or c.did in only]


class _Encoded(torch.utils.data.Dataset):
    """Decodes images inside DataLoader workers when there are any."""

    def __init__(self, items: Sequence[EmbedInput], image_root: Path):
        self.items, self.image_root = items, image_root

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        from rare.model import EncodeInput

        item = self.items[i]
        image = load_image(self.image_root, item.image) if item.image else None
        return EncodeInput(text=item.text, image=image)


def _batches(retriever: Any, items: Sequence[EmbedInput], image_root: Path, batch_size: int,
             num_workers: int, device: str, precision: str) -> Iterator[np.ndarray]:
    loader = torch.utils.data.DataLoader(
        _Encoded(items, image_root), batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=retriever.collator(), persistent_workers=False,
    )
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast, worker_errors_unwrapped():  # a bad image names its file
        for batch in loader:
            emb = retriever({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()})
            if not bool(torch.isfinite(emb).all()):
                raise ValueError("the retriever produced non-finite embeddings")
            yield emb.float().cpu().numpy().astype(np.float16)


@dataclass
class EmbedStats:
    computed: int = 0  # entries embedded now
    reused: int = 0    # entries found in the cache
    rows: int = 0      # rows embedded now


def _reusable(final: Embeddings, label: str) -> bool:
    """A cached entry that passes its manifest check; a damaged one is discarded (the caller embeds it again)."""
    if not final.dir.exists():
        return False
    try:
        final.check()
        return True
    except ManifestError as exc:
        print_warning(f"embedding cache entry {label}: {exc}; discarded, embedding it again")
        shutil.rmtree(final.dir)
        return False


def embed(retriever: Any, make_items: Callable[[], Sequence[EmbedInput]], key: str, cache_dir: Path, image_root: Path,
          *, batch_size: int = 128, shard_rows: int = 65_536, num_workers: int = 0, device: str = "cpu",
          precision: str = "fp32", label: str = "", stats: EmbedStats | None = None) -> Embeddings:
    """Embeddings of the items (cached under ``key``; ``make_items`` is only called on a miss).

    Items are encoded grouped by text length, which cuts padding, and written back in record order.
    """
    stats = stats if stats is not None else EmbedStats()
    ranks = Ranks.current()
    final = Embeddings(cache_dir / key)
    if ranks.from_leader(ranks.leader and _reusable(final, label or key)):
        stats.reused += 1
        return final
    t0 = time.perf_counter()
    items = make_items()
    ids = np.array([it.id for it in items], dtype=str)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{label}: duplicate ids; every record must have its own id")
    # Images first, then by text length: similar lengths share a batch, so padding costs little.
    order = np.lexsort(([len(it.text) for it in items], [it.image is None for it in items]))
    shards = [order[a:a + shard_rows] for a in range(0, len(order), shard_rows)]
    store = ShardStore(cache_dir / f"{key}.parts")
    if ranks.leader:
        _reset_layout(store.dir, json.dumps({"rows": len(items), "shard_rows": shard_rows}))
    ranks.barrier()

    mine = claim(store, [len(rows) for rows in shards], ranks)
    if mine:
        columns = [TextColumn(f"embed {label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        console = Console(stderr=True)
        with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
            bar = progress.add_task("embed", total=sum(len(shards[i]) for i in mine))
            for i in mine:
                chunks = []
                for emb in _batches(retriever, [items[j] for j in shards[i]], image_root, batch_size,
                                    num_workers, device, precision):
                    chunks.append(emb)
                    progress.advance(bar, len(emb))
                store.write(i, np.concatenate(chunks))
                stats.rows += len(shards[i])
    ranks.barrier()  # every shard is written
    if ranks.leader:
        _assemble(final, store, shards, ids, retriever.embed_dim, label)
        stats.computed += 1
    ranks.barrier()
    log.info("embedded %s: %d rows in %.1f s", label, len(items), time.perf_counter() - t0)
    return final


def _reset_layout(parts: Path, layout: str) -> None:
    """Shards of another layout (row count, shard size) cannot be reused."""
    if (parts / "layout.json").exists() and (parts / "layout.json").read_text() != layout:
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    (parts / "layout.json").write_text(layout)


def _assemble(final: Embeddings, store: ShardStore, shards: Sequence[np.ndarray], ids: np.ndarray, dim: int,
              label: str) -> None:
    """The finished shards, checked, back in record order as one entry, swapped in whole."""
    tmp = temp_sibling(final.dir)
    tmp.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(tmp / "vectors.npy", mode="w+", dtype=np.float16, shape=(len(ids), dim))
    for i, rows in enumerate(shards):
        out[rows] = store.read(i, len(rows))
    out.flush()
    del out
    np.save(tmp / "ids.npy", ids, allow_pickle=False)
    (tmp / "done").write_text(json.dumps({"rows": len(ids), "dim": dim, "label": label}))
    write_folder_manifest(tmp)  # last: what every later open checks the entry against
    try:
        os.replace(tmp, final.dir)
    except OSError:  # another process finished the same entry first: theirs is identical
        shutil.rmtree(tmp)
    shutil.rmtree(store.dir, ignore_errors=True)


def pool_ids(pool_file: Path) -> np.ndarray:
    """Every did of a pool file, read with Arrow's JSON reader (fast on the 2.4 GB global pool)."""
    chunks = [b.column("did").to_numpy(zero_copy_only=False) for b in iter_pool_batches(pool_file)]
    ids = np.concatenate(chunks).astype(str) if chunks else np.array([], dtype=str)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(pool_file, None, f"duplicate did {uniq[counts > 1][0]!r} in candidate pool")
    return ids


def pool_sources(pool_file: Path, locals_: Sequence[Embeddings],
                 embed_rest: Callable[[set[str]], Embeddings]) -> tuple[list[Path], np.ndarray]:
    """The global pool as (list of .npy files, ids of their rows concatenated), reusing local entries.

    Each local pool whose dids all belong to the global pool (and to no local pool already taken)
    is used as it is; candidates no local pool covers are embedded by ``embed_rest(dids)``, which
    returns their Embeddings. On M-BEIR the 16 local pools concatenate to the global pool exactly.
    """
    wanted = pool_ids(pool_file)
    taken: list[Embeddings] = []
    covered = np.array([], dtype=str)
    for emb in locals_:
        ids = emb.ids()
        if np.isin(ids, wanted).all() and not np.isin(ids, covered).any():
            taken.append(emb)
            covered = np.concatenate([covered, ids])
    rest = wanted[~np.isin(wanted, covered)]
    if len(rest):
        taken.append(embed_rest(set(rest.tolist())))
    ids = np.concatenate([e.ids() for e in taken]) if taken else np.array([], dtype=str)
    return [e.vectors_path for e in taken], ids

