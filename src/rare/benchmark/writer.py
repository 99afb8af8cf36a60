"""Write the datasets' records, qrels, instructions and images in the exact M-BEIR layout.

Every path comes from ``MBEIRRoot`` and every record goes through ``write_jsonl``, so the
benchmark and real M-BEIR are read by the same code. Files are written in a fixed order from
seeded data, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rare.benchmark.builder import DatasetBuild
from rare.benchmark.render import render_all
from rare.data.instructions import HEADER
from rare.data.layout import MBEIRRoot
from rare.data.qrels import qrels_line
from rare.data.records import write_jsonl
from rare.mbeir import TASKS, DatasetTask, dataset

TSV_NAMES = {"glyphcaps": "GlyphCaps", "factwiki": "FactWiki", "twinpix": "TwinPix", "emblemkb": "EmblemKB",
             "tweakset": "TweakSet"}
# Four task instructions per (dataset, task), in the spirit of M-BEIR's; the query text follows them.
INSTRUCTIONS: dict[tuple[str, int], tuple[str, str, str, str]] = {
    ("glyphcaps", 0): ("Find the image that matches this caption.", "Retrieve a picture of the shapes described.",
                       "Identify the image showing the described scene.", "Show me an image that fits this caption."),
    ("glyphcaps", 3): ("Find a caption for the shapes in this image.", "Retrieve the short description of this picture.",
                       "Identify the caption written for this image.", "Find text that describes this scene."),
    ("factwiki", 1): ("Retrieve the passage that answers this question.", "Find a paragraph containing the answer.",
                      "Locate the encyclopedia passage that answers the question.",
                      "Find the text that holds the answer to this question."),
    ("factwiki", 2): ("Find the picture and caption that answer this question.",
                      "Retrieve the image card that shows the answer.",
                      "Identify the captioned picture this question is about.",
                      "Find an image with a caption that answers the question."),
    ("twinpix", 4): ("Find an image that is nearly identical to this one.", "Retrieve the closest duplicate of this picture.",
                     "Identify the image that shows the same scene.", "Find the image that looks most like this one."),
    ("emblemkb", 6): ("Retrieve the encyclopedia passage about the organisation pictured that answers the question.",
                      "Find the article about the pictured emblem's owner that answers this question.",
                      "Identify the organisation shown and retrieve the passage with the answer.",
                      "Find the wiki passage that answers this question about the pictured organisation."),
    ("emblemkb", 8): ("Find the emblem card of the organisation pictured that answers the question.",
                      "Retrieve the image and summary of the organisation shown that answer this question.",
                      "Identify the organisation shown and retrieve its emblem card.",
                      "Find the captioned emblem of the pictured organisation that answers the question."),
    ("tweakset", 7): ("Find the image after applying the requested change.",
                      "Retrieve the modified picture described by the request.",
                      "Show the edited version of this image.",
                      "Find this image with the described modifications applied."),
}


def _qrels(path: Path, queries: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for q in queries:
            for did in q["pos_cand_list"]:
                fh.write(qrels_line(q["qid"], did, q["task_id"]))


def _instructions(path: Path, groups: list[tuple[str, int]]) -> None:
    lines = ["\t".join(HEADER)]
    for name, task in groups:
        qmod, cmod = TASKS[task]
        lines.append("\t".join([qmod, cmod, TSV_NAMES[name], str(dataset(name).id), *INSTRUCTIONS[(name, task)]]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_root(out: Path, builds: list[DatasetBuild], image_size: int, workers: int = 0) -> dict[str, Any]:
    """Write every file under ``out`` and return the counts that go into the manifest."""
    root = MBEIRRoot(out)
    counts: dict[str, Any] = {"dataset_tasks": {}, "train_queries": {}}
    union_train: list[dict[str, Any]] = []
    train_pool: list[dict[str, Any]] = []
    pools: list[tuple[DatasetTask, list[dict[str, Any]]]] = []
    for b in builds:
        train = [q for (split, _t), qs in sorted(b.queries.items()) if split == "train" for q in qs]
        write_jsonl(root.query_file("train", b.name), train)
        _qrels(root.qrels_file("train", b.name), train)
        union_train.extend(train)
        train_pool.extend(b.train_pool)
        counts["train_queries"][b.name] = len(train)
        for task, pool in sorted(b.pools.items()):
            dt = DatasetTask(b.name, task)
            write_jsonl(root.local_pool(dt), pool)
            pools.append((dt, pool))
            row = counts["dataset_tasks"][dt.name] = {"pool": len(pool)}
            for split in ("val", "test"):
                qs = b.queries.get((split, task), [])
                write_jsonl(root.query_file(split, b.name, task), qs)
                _qrels(root.qrels_file(split, dt), qs)
                row[split] = len(qs)
    pools.sort(key=lambda item: (item[0].task_id, dataset(item[0].dataset).id))  # M-BEIR table order
    counts["global_pool"] = write_jsonl(root.global_pool("test"), (c for _, pool in pools for c in pool))
    counts["train_pool"] = write_jsonl(root.global_pool("train"), train_pool)
    counts["union_train"] = write_jsonl(root.union_train_file, union_train)
    _instructions(root.instructions_file, [(dt.dataset, dt.task_id) for dt, _ in pools])
    jobs = [(root.path / rel, scene) for b in builds for rel, scene in b.images.items()]
    counts["images"] = render_all(jobs, image_size, workers)
    return counts


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """What was generated and how: seed, sizes, counts (no timestamps, so reruns stay byte-identical)."""
    (out / "benchmark.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
