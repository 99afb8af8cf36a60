"""A damaged embedding cache entry is discarded and embedded again, with one warning naming it, and the
evaluation's outputs are identical to an intact run's; `rare serve` refuses one naming the file (issue 25:
a vectors.npy with the wrong row count gave "order has 96 entries for 48 candidates", a truncated one
"mmap length is greater than file size")."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rare.config.evaluate import EvaluateParams
from rare.evaluate import embed
from rare.evaluate.protocol import evaluate
from rare.manifest import ManifestError
from rare.model import load_retriever
from rare.serve.index import load_variant


@pytest.fixture(scope="module")
def retriever(tiny_retriever_dir: Path):
    return load_retriever(tiny_retriever_dir)


def outputs(folder: Path) -> dict[str, bytes]:
    """Everything an evaluation publishes but its timings and cache counters (runtime.json)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "runtime.json"}


@pytest.fixture(scope="module")
def reference(tiny_root_session: Path, retriever, tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("embref")
    evaluate("none", retriever, "none", tiny_root_session, base / "out", EvaluateParams(cache_dir=str(base / "cache")))
    return base / "cache", outputs(base / "out")


def a_pool_entry(cache: Path) -> embed.Embeddings:
    """The largest candidate-pool entry (its damage changes every global ranking)."""
    entries = [embed.Embeddings(d) for d in cache.iterdir() if d.is_dir() and not d.name.endswith(".parts")]
    pools = [e for e in entries if json.loads((e.dir / "done").read_text())["label"].endswith(" pool")]
    return max(pools, key=lambda e: (len(e.ids()), e.dir.name))


def _double_rows(e: embed.Embeddings) -> None:
    v = np.load(e.vectors_path)
    np.save(e.vectors_path, np.concatenate([v, v]))


def _truncate_vectors(e: embed.Embeddings) -> None:
    data = e.vectors_path.read_bytes()
    e.vectors_path.write_bytes(data[: len(data) // 2])


def _shuffle_ids(e: embed.Embeddings) -> None:
    path = e.dir / "ids.npy"
    np.save(path, np.load(path)[::-1])  # same size and shape, different content


DAMAGES: dict[str, Callable[[embed.Embeddings], None]] = {
    "vectors with twice the rows": _double_rows,
    "vectors truncated": _truncate_vectors,
    "vectors removed": lambda e: e.vectors_path.unlink(),
    "ids removed": lambda e: (e.dir / "ids.npy").unlink(),
    "ids reordered": _shuffle_ids,
    "manifest removed": lambda e: (e.dir / "manifest.json").unlink(),
    "manifest garbage": lambda e: (e.dir / "manifest.json").write_text("{"),
}


@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_a_damaged_entry_is_embedded_again_with_identical_results(
        reference, tiny_root_session: Path, retriever, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        name: str) -> None:
    ref_cache, ref_out = reference
    cache = tmp_path / "cache"
    shutil.copytree(ref_cache, cache)
    entry = a_pool_entry(cache)
    DAMAGES[name](entry)
    capsys.readouterr()

    evaluate("none", retriever, "none", tiny_root_session, tmp_path / "out",
                      EvaluateParams(cache_dir=str(cache)))

    assert outputs(tmp_path / "out") == ref_out
    assert json.loads((tmp_path / "out/runtime.json").read_text())["embeddings"]["computed"] == 1  # only it
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and entry.dir.name in warnings[0] and "embedding it again" in warnings[0], warnings
    entry.check()  # rebuilt whole


@pytest.mark.parametrize("name", ["vectors truncated", "vectors with twice the rows"])
def test_serve_refuses_a_damaged_entry_naming_the_file(reference, tiny_root_session: Path, tiny_retriever_dir: Path,
                                                       tmp_path: Path, name: str) -> None:
    ref_cache, _ = reference
    cache = tmp_path / "cache"
    shutil.copytree(ref_cache, cache)
    entry = a_pool_entry(cache)
    DAMAGES[name](entry)
    params = EvaluateParams(cache_dir=str(cache), pools=["local"])
    with pytest.raises(ManifestError, match=rf"{entry.vectors_path}: .*(bytes|array).*rerun its evaluation"):
        load_variant("none", tiny_retriever_dir, tiny_root_session, params, None, None)
