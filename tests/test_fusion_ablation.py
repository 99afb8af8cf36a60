"""The fusion diagnostic (bench/fusion_ablation.py) drops exactly the term it names."""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.fusion_ablation import ablate, encode, positive_ranks
from rare.data.instructions import InstructionTable
from rare.data.layout import MBEIRRoot
from rare.evaluate.embed import TextView, query_items
from rare.model.io import load_retriever


def test_fused_query_is_the_normalised_sum_of_its_text_only_and_image_only_embeddings(
        tiny_benchmark_root: Path, tiny_retriever_dir: Path) -> None:
    raw = MBEIRRoot(tiny_benchmark_root)
    r = load_retriever(tiny_retriever_dir)
    view = TextView(False, "replace", InstructionTable.load(raw.path / "instructions/query_instructions.tsv"))
    items = query_items(raw.query_file("test", "emblemkb", 6), view)
    fused, text, image = (torch.from_numpy(encode(r, items, raw.path, t, i))
                          for t, i in ((True, True), (True, False), (False, True)))
    assert not torch.allclose(fused, text, atol=1e-3)
    assert torch.allclose(fused, F.normalize(text + image, dim=-1), atol=1e-5)  # the dual family's fusion


def test_text_queries_rank_alike_with_or_without_the_query_image_term(
        tiny_benchmark_root: Path, tiny_retriever_dir: Path) -> None:
    recalls = ablate(tiny_retriever_dir, "none", "glyphcaps_task0", tiny_benchmark_root, None)
    assert recalls["query image dropped"] == recalls["fused (evaluation)"]
    assert recalls["query image only"] == 0.0  # no term left: every candidate ties, the positive ranks last


def test_positive_rank_counts_strictly_better_candidates() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.8], [0.3, 0.2, 0.1, 0.0], [0.5, 0.5, 0.5, 0.5]])
    assert positive_ranks(scores, [[2], [0, 3], [1]]).tolist() == [3, 1, 4]
