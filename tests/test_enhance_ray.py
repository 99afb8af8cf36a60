"""The optional Ray path on a local cluster with 2 CPU workers gives the single-process output."""

import os
from functools import partial
from pathlib import Path

import pytest

from rare.config.enhance import EnhanceParams
from rare.enhance.side import enhance_side
from tests.fixtures.enhance import FAKE_IDENTITY, FakeBackend

REPO = Path(__file__).resolve().parents[1]


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_ray_workers_match_single_process(tiny_root_session, tmp_path):
    ray = pytest.importorskip("ray")
    log = tmp_path / "ray.log"
    params = EnhanceParams(cache_dir=str(tmp_path / "ray_cache"), shard_size=4, batch_size=2,
                           ray={"enabled": True, "num_workers": 2, "num_cpus_per_worker": 1})
    # The fake backend lives in tests/, so the workers need the repo on their path.
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        distributed = enhance_side(params, tiny_root_session, tmp_path / "ray", "corpus",
                                   make_backend=partial(FakeBackend, log=log), identity=FAKE_IDENTITY, progress=False)
    finally:
        ray.shutdown()
    single_params = params.model_copy(update={"cache_dir": str(tmp_path / "single_cache"), "ray": params.ray.model_copy(
        update={"enabled": False})})
    single = enhance_side(single_params, tiny_root_session, tmp_path / "single", "corpus",
                          make_backend=FakeBackend, identity=FAKE_IDENTITY, progress=False)
    assert tree(tmp_path / "ray") == tree(tmp_path / "single")
    assert distributed.summary == single.summary
    # Both actors took shards (an actor that starts late may find its shard's items already cached by
    # the other, so who *generated* is timing-dependent; who *processed* is not: the pool hands out two).
    assert distributed.runtime["workers"] == 2 and single.runtime["workers"] == 1
    generators = {line.split()[1] for line in log.read_text().splitlines()}
    assert generators and str(os.getpid()) not in generators  # generation ran in the actors, not the driver
    assert distributed.runtime["shards"] == single.runtime["shards"] > 2
