"""Generate the whole embedded benchmark into a directory."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from rare.benchmark.builder import Builder, DatasetBuild
from rare.benchmark.datasets import EMBEDDED
from rare.benchmark.spec import BuildContext
from rare.benchmark.vocab import SCHEMA
from rare.benchmark.world import Namer
from rare.benchmark.writer import write_manifest, write_root
from rare.config.data import DataParams

GENERATOR_VERSION = 1  # bump whenever the same params would produce different files


def build_datasets(params: DataParams) -> list[DatasetBuild]:
    """Every dataset's records and scenes, in memory. Each dataset has its own RNG stream, so
    changing one dataset's design leaves the others' files as they were."""
    sizes = params.resolved_sizes
    namer = Namer(random.Random(f"rare-bench:{params.seed}:names"))  # shared: entity names never collide
    ctx = BuildContext(namer, params.unseen_entities)
    builds = []
    for spec in EMBEDDED:
        b = Builder(spec.dataset.name, params.seed, sizes)
        spec.build(b, ctx)
        builds.append(b.out)
    return builds


def generate(out: str | Path, params: DataParams) -> dict[str, Any]:
    """Write the benchmark under ``out`` (which should be empty) and return its manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = write_root(out, build_datasets(params), params.image_size, params.workers)
    manifest = {
        "schema": SCHEMA, "generator_version": GENERATOR_VERSION, "seed": params.seed, "preset": params.preset,
        "sizes": params.resolved_sizes.model_dump(), "image_size": params.image_size,
        "unseen_entities": params.unseen_entities, "counts": counts,
    }
    write_manifest(out, manifest)
    return manifest
