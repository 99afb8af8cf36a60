"""M-BEIR task instructions, chosen deterministically per query.

UniIR draws the prompt with ``random.choice`` seeded by rank, so its scores drift with the
number of GPUs; here the choice is a stable hash of (seed, qid).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from rare.data.input_error import DataError
from rare.data.lines import int_field, iter_lines
from rare.mbeir import MODALITIES

HEADER = ("query_modality", "cand_modality", "dataset", "dataset_id", "prompt_1", "prompt_2", "prompt_3", "prompt_4")


def stable_index(key: str, n: int) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


@dataclass(frozen=True)
class InstructionTable:
    prompts: dict[tuple[int, str, str], tuple[str, ...]]  # (dataset_id, query mod, cand mod) -> prompts
    names: dict[int, str]  # dataset_id -> dataset name, as the TSV spells it
    path: str = "instructions"  # where the table came from, for error messages

    @classmethod
    def load(cls, path: str | Path) -> InstructionTable:
        path = Path(path)
        prompts: dict[tuple[int, str, str], tuple[str, ...]] = {}
        names: dict[int, str] = {}
        for lineno, text in iter_lines(path):
            if lineno == 1:
                continue  # header
            row = text.split("\t")
            if len(row) < 5:
                raise DataError(path, lineno, f"expected >= 5 tab-separated columns, got {len(row)}")
            qmod, cmod, name, ds_s = (c.strip() for c in row[:4])
            for key, mod in (("query_modality", qmod), ("cand_modality", cmod)):
                if mod not in MODALITIES:
                    raise DataError(path, lineno, f"{key} {mod!r} is not one of {list(MODALITIES)}")
            ds_id = int_field(ds_s)
            if ds_id is None:
                raise DataError(path, lineno, f"dataset_id {ds_s!r} is not an integer")
            texts = tuple(c.strip() for c in row[4:] if c.strip())
            if not texts:
                raise DataError(path, lineno, "no instruction prompts on this line")
            key3 = (ds_id, qmod, cmod)
            if key3 in prompts:
                raise DataError(path, lineno, f"duplicate instruction group {key3}")
            prompts[key3] = texts
            names[ds_id] = name.lower()
        return cls(prompts, names, str(path))

    def options(self, dataset_id: int, query_modality: str, cand_modality: str) -> tuple[str, ...]:
        """A missing group is bad data (the TSV lacks a line), reported against the TSV."""
        try:
            return self.prompts[(dataset_id, query_modality, cand_modality)]
        except KeyError:
            raise DataError(
                self.path, None,
                f"no instruction for dataset {dataset_id}, {query_modality} -> {cand_modality}; "
                f"known groups: {sorted(self.prompts)}"
            ) from None

    def choose(self, qid: str, dataset_id: int, query_modality: str, cand_modality: str, seed: int = 0) -> str:
        opts = self.options(dataset_id, query_modality, cand_modality)
        return opts[stable_index(f"{seed}:{qid}", len(opts))]
