"""Embedding across torch.distributed ranks (gloo, 2 CPU processes): the vectors are a single process's bit
for bit, and a killed multi-rank run resumes without embedding a finished shard again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rare.evaluate import embed
from rare.evaluate.shards import ShardStore

REPO = Path(__file__).resolve().parents[1]
N_ITEMS, SHARD_ROWS = 46, 4  # 12 shards, the last one short


def _items(root: Path) -> list[embed.EmbedInput]:
    """Text only, image only, and both; images of assorted sizes and modes."""
    rng = np.random.default_rng(0)
    words = "a red circle on a blue square beside the green triangle of an encyclopedia passage".split()
    items = []
    for i in range(N_ITEMS):
        text = " ".join(rng.choice(words, size=int(rng.integers(1, 14)))) if i % 3 else ""
        image = None
        if i % 4 != 1 or not text:
            image = f"img/{i}.png"
            (root / "img").mkdir(parents=True, exist_ok=True)
            w, h = (int(v) for v in rng.integers(16, 80, size=2))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / image)
        items.append(embed.EmbedInput(f"9:{i}", text, image))
    return items


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[embed.EmbedInput]]:
    root = tmp_path_factory.mktemp("ranks")
    items = _items(root)
    (root / "items.json").write_text(json.dumps([vars(it) for it in items]))
    return root, items


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, model: Path, root: Path, cache: Path, key: str, *, die_rank: int = -1,
            die_after: int = -1) -> list[subprocess.Popen]:
    port = _port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "tests.fixtures.rank_worker", "--model", str(model), "--items",
               str(root / "items.json"), "--root", str(root), "--cache", str(cache), "--key", key,
               "--out", str(cache / f"rank{rank}.json"), "--shard-rows", str(SHARD_ROWS),
               "--die-after", str(die_after if rank == die_rank else -1)]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    return procs


def _finish(procs: list[subprocess.Popen], timeout: float = 240) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, out.decode()[-3000:]


def _reference(model: Path, root: Path, items: list[embed.EmbedInput], cache: Path) -> np.ndarray:
    import torch

    from rare.model import load_retriever

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs
    try:
        e = embed.embed(load_retriever(model), lambda: items, "single", cache, root, batch_size=3,
                        shard_rows=SHARD_ROWS)
    finally:
        torch.set_num_threads(threads)
    return np.asarray(e.vectors())


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_bit_for_bit(setup, tiny_retriever_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    root, items = setup
    _finish(_launch(2, tiny_retriever_dir, root, tmp_path, "two"))
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in reports] == [2, 2]
    written = [set(r["written"]) for r in reports]
    assert written[0] and written[1] and not written[0] & written[1]           # both ranks worked, on different shards
    assert written[0] | written[1] == set(range(12))
    assert sum(r["rows"] for r in reports) == N_ITEMS and [r["computed"] for r in reports] == [1, 0]
    two = embed.Embeddings(tmp_path / "two")
    single = _reference(tiny_retriever_dir, root, items, tmp_path)
    assert two.ids().tolist() == [it.id for it in items]
    assert np.asarray(two.vectors()).tobytes() == single.tobytes()              # bit for bit
    assert np.abs(single).sum() > 0


@pytest.mark.slow
def test_a_killed_two_rank_run_resumes_without_redoing_finished_shards(setup, tiny_retriever_dir: Path,  # noqa: ANN001
                                                                        tmp_path: Path) -> None:
    root, items = setup
    procs = _launch(2, tiny_retriever_dir, root, tmp_path, "k", die_rank=1, die_after=1)
    procs[1].wait(timeout=240)
    assert procs[1].returncode == 9  # rank 1 died as it was about to write its second shard
    procs[0].send_signal(signal.SIGKILL)  # then the rest of the group is killed
    procs[0].wait(timeout=60)
    store = ShardStore(tmp_path / "k.parts")
    sizes = [len(range(a, min(a + SHARD_ROWS, N_ITEMS))) for a in range(0, N_ITEMS, SHARD_ROWS)]
    unfinished = set(store.unfinished(sizes))
    finished = set(range(len(sizes))) - unfinished
    assert 1 in finished and 3 not in finished  # rank 1 owns 1, 3, 5, ...: it finished its first only
    assert unfinished and not (tmp_path / "k" / "done").exists()  # nothing assembled from a partial run
    time.sleep(0.1)
    _finish(_launch(2, tiny_retriever_dir, root, tmp_path, "k"))
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    rewritten = [i for r in reports for i in r["written"]]
    assert sorted(rewritten) == sorted(unfinished)                               # each unfinished shard once
    assert sum(r["rows"] for r in reports) == sum(sizes[i] for i in unfinished)
    assert all(r["written"] for r in reports) or len(unfinished) == 1            # the rest is shared out again
    single = _reference(tiny_retriever_dir, root, items, tmp_path)
    assert np.asarray(embed.Embeddings(tmp_path / "k").vectors()).tobytes() == single.tobytes()


def test_a_damaged_shard_is_embedded_again_and_never_assembled(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    arr = np.arange(12, dtype=np.float16).reshape(4, 3)
    store.write(0, arr)
    store.write(1, arr[:2])
    assert store.unfinished([4, 2, 2]) == [2] and store.read(0, 4).tobytes() == arr.tobytes()
    assert store.unfinished([4, 3, 2]) == [1, 2]                                  # wrong row count
    data = bytearray(store.array_path(0).read_bytes())
    data[-1] ^= 0xFF
    store.array_path(0).write_bytes(bytes(data))                                  # same shape, other bytes
    assert store.unfinished([4, 2]) == [0]
    with pytest.raises(ValueError, match=r"part-00000\.npy: shard missing, not 4 rows"):
        store.read(0, 4)
    assert not store.array_path(0).exists()                                       # removed: the rerun redoes it
    store.record_path(1).unlink()                                                 # array without its record
    assert store.unfinished([4, 2]) == [0, 1]


@pytest.mark.slow
def test_rare_evaluate_on_two_ranks_writes_what_one_process_writes(tiny_root_session: Path, tiny_retriever_dir: Path,
                                                                  tmp_path: Path) -> None:
    """``rare.stages.evaluate.run_evaluate`` under torchrun's variables: rank 1 only embeds, rank 0 evaluates; the
    queries, the local pools and the global pool's rest pair their collectives up, and the scores and run
    files equal a single process's."""
    import yaml

    from rare.config.evaluate import EvaluateParams
    from rare.evaluate.protocol import evaluate
    from rare.model import load_retriever

    params = {"device": "cpu", "precision": "fp32", "shard_rows": 3, "embed_batch": 2}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "evaluate": {**params, "cache_dir": str(tmp_path / "cache2")}, "tracking": {"enabled": False}}))
    port, procs = _port(), []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.fixtures.rank_worker", "--model", str(tiny_retriever_dir), "--root",
             str(tiny_root_session), "--out", str(tmp_path / "two"), "--evaluate", str(tmp_path / "params.yaml")],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    _finish(procs)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        evaluate("none", load_retriever(tiny_retriever_dir), "none", tiny_root_session, tmp_path / "one",
                 EvaluateParams(**params, cache_dir=str(tmp_path / "cache1")))
    finally:
        torch.set_num_threads(threads)
    for name in ("scores.json", "metrics.json"):
        assert (tmp_path / "two" / name).read_text() == (tmp_path / "one" / name).read_text()
    runs = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "runs").rglob("*.trec"))
    assert len(runs) >= 4
    for rel in runs:
        assert (tmp_path / "two" / rel).read_bytes() == (tmp_path / "one" / rel).read_bytes(), rel
    for entry in (tmp_path / "cache1").iterdir():  # every entry, bit for bit, under the same key
        assert (tmp_path / "cache2" / entry.name / "vectors.npy").read_bytes() == (entry / "vectors.npy").read_bytes()
