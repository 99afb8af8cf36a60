"""What a dataset builder produces, and the bookkeeping every builder shares (ids, images, splits).

Candidates are created first and get their dids only when their pool is finalised, after a
seeded shuffle: a did's number then says nothing about whether it is a positive, so an
evaluator that breaks score ties by did gains nothing from the generation order.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from rare.benchmark.scene import Scene, annotation_json
from rare.config.data import BenchmarkSizes
from rare.mbeir import TASKS, dataset


@dataclass
class DatasetBuild:
    name: str
    queries: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)  # (split, task) -> records
    pools: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # task -> local pool
    train_pool: list[dict[str, Any]] = field(default_factory=list)  # every train positive
    images: dict[str, Scene] = field(default_factory=dict)  # relative path -> scene to render


def _src(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class Builder:
    """Shared state of one dataset's generation: its RNG, id counters, image files and outputs."""

    def __init__(self, name: str, seed: int, sizes: BenchmarkSizes):
        self.info = dataset(name)
        self.name = name
        self.rng = random.Random(f"rare-bench:{seed}:{name}")
        self.sizes = sizes
        self.out = DatasetBuild(name)
        self._qids = 0
        self._dids = 0
        self._image_paths: dict[Scene, str] = {}
        self._in_train_pool: set[str] = set()

    # ------------------------------------------------------------- images
    def image(self, scene: Scene) -> str:
        """The file for a scene; identical scenes share one file (a CIRR-style reference that is also a candidate)."""
        path = self._image_paths.get(scene)
        if path is None:
            path = f"mbeir_images/{self.name}_images/{self.name}_{len(self._image_paths):06d}.png"
            self._image_paths[scene] = path
            self.out.images[path] = scene
        return path

    # --------------------------------------------------------- candidates
    def candidate(self, txt: str | None, scene: Scene | None, **src: Any) -> dict[str, Any]:
        """A candidate without its did yet; its annotation (the scene's, if any) goes into src_content."""
        img = self.image(scene) if scene is not None else None
        modality = "image,text" if (img and txt) else ("image" if img else "text")
        content = annotation_json(self.name, scene.annotation() if scene is not None else None, **src)
        return {"did": None, "txt": txt, "img_path": img, "modality": modality, "src_content": _src(content)}

    def _assign(self, cands: list[dict[str, Any]]) -> None:
        for c in cands:
            if c["did"] is None:
                self._dids += 1
                c["did"] = f"{self.info.id}:{self._dids}"

    def pool(self, task: int, cands: list[dict[str, Any]]) -> None:
        """Finalise a local pool: shuffle, number, check every candidate has the task's modality."""
        want = TASKS[task][1]
        bad = [c for c in cands if c["modality"] != want]
        if bad:
            raise AssertionError(f"{self.name} task {task}: candidate modality {bad[0]['modality']!r} != {want!r}")
        order = list(cands)
        self.rng.shuffle(order)
        self._assign(order)
        self.out.pools[task] = order

    def train_positive(self, cand: dict[str, Any]) -> None:
        """Register a train positive in the global train pool (numbered on first use)."""
        self._assign([cand])
        if cand["did"] not in self._in_train_pool:
            self._in_train_pool.add(cand["did"])
            self.out.train_pool.append(cand)

    # ------------------------------------------------------------- queries
    def query(self, split: str, task: int, txt: str | None, scene: Scene | None, pos: list[dict[str, Any]],
              **src: Any) -> None:
        qmod = TASKS[task][0]
        img = self.image(scene) if scene is not None else None
        if ("image" in qmod) != bool(img) or ("text" in qmod) != bool(txt):
            raise AssertionError(f"{self.name} task {task}: query does not carry modality {qmod!r}")
        if split == "train":
            for c in pos:
                self.train_positive(c)
        elif any(c["did"] is None for c in pos):
            raise AssertionError(f"{self.name} task {task}: {split} positive is in no local pool")
        self._qids += 1
        content = annotation_json(self.name, scene.annotation() if scene is not None else None, **src)
        rec = {"qid": f"{self.info.id}:{self._qids}", "query_txt": txt, "query_img_path": img,
               "query_modality": qmod, "query_src_content": _src(content),
               "pos_cand_list": [c["did"] for c in pos], "neg_cand_list": [], "task_id": task}
        self.out.queries.setdefault((split, task), []).append(rec)

    def eval_splits(self) -> list[str]:
        """The split of each evaluation query in generation order: test first, then val."""
        return ["test"] * self.sizes.test + ["val"] * self.sizes.val
