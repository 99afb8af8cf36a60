"""Resumable shards of one embedding entry: each written atomically beside its manifest (``rare.manifest``).

A shard counts as finished only when its ``.npy`` and its ``.json`` manifest (size, shape, sha256) agree;
the manifest is written after the array, both by atomic rename, so a kill at any point leaves either a
finished shard or none. A shard whose bytes no longer match its manifest is embedded again rather than
assembled into an entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rare.atomic import replacing
from rare.evaluate.ranks import Ranks
from rare.manifest import ManifestError, verify, write_manifest


@dataclass(frozen=True)
class ShardStore:
    dir: Path

    def array_path(self, i: int) -> Path:
        return self.dir / f"part-{i:05d}.npy"

    def record_path(self, i: int) -> Path:
        return self.dir / f"part-{i:05d}.json"

    def write(self, i: int, arr: np.ndarray) -> None:
        with replacing(self.array_path(i)) as tmp, open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        write_manifest(self.record_path(i), [self.array_path(i)])

    def load(self, i: int, rows: int) -> np.ndarray | None:
        """The shard if it is finished, has ``rows`` rows and still matches its manifest; else None."""
        try:
            verify(self.record_path(i), full=True)
            arr = np.load(self.array_path(i), allow_pickle=False)
        except (ManifestError, OSError, ValueError):
            return None
        return arr if len(arr) == rows else None

    def read(self, i: int, rows: int) -> np.ndarray:
        """A finished shard, checked; a damaged one is removed (the next run embeds it again) and named."""
        arr = self.load(i, rows)
        if arr is None:
            self.array_path(i).unlink(missing_ok=True)
            self.record_path(i).unlink(missing_ok=True)
            raise ValueError(f"{self.array_path(i)}: shard missing, not {rows} rows, or not the bytes its record "
                             "hashes; removed, rerun to embed it again")
        return arr

    def unfinished(self, sizes: Sequence[int]) -> list[int]:
        return [i for i, rows in enumerate(sizes) if self.load(i, rows) is None]


def claim(store: ShardStore, sizes: Sequence[int], ranks: Ranks) -> list[int]:
    """The unfinished shards this rank embeds (it then ``write``s each).

    Rank 0 lists the unfinished shards once and every rank takes its share of that one list, so a rerun
    after a kill embeds exactly the shards no rank finished, spread over the ranks it now has.
    """
    return ranks.share(ranks.from_leader(store.unfinished(sizes) if ranks.leader else None))
