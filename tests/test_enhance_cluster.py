"""Cluster-facing choices: how many Ray workers start, and where the SQLite item cache may live."""

from __future__ import annotations

import sqlite3

import pytest

from rare.config.enhance import EnhanceParams, RayOptions
from rare.enhance.cache import Cache, filesystem_type, journal_mode
from rare.enhance.ray_runner import worker_count

MOUNTS = """\
/dev/nvme0n1p1 / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw 0 0
fileserver:/export/shared /shared nfs4 rw,vers=4.2 0 0
/dev/sdb1 /shared/local\\040disk xfs rw 0 0
"""


def test_workers_follow_the_gpus_the_cluster_has() -> None:
    gpu = RayOptions(enabled=True, num_gpus_per_worker=1, num_cpus_per_worker=8)
    assert worker_count(gpu, {"GPU": 4.0, "CPU": 64.0}, shards=100) == 4      # auto: all four GPUs
    assert worker_count(gpu, {"GPU": 8.0, "CPU": 24.0}, shards=100) == 3      # CPUs bind first
    assert worker_count(gpu, {"GPU": 8.0, "CPU": 64.0}, shards=2) == 2        # never more than shards
    half = gpu.model_copy(update={"num_gpus_per_worker": 0.5})
    assert worker_count(half, {"GPU": 3.0, "CPU": 64.0}, shards=100) == 6
    cpu = RayOptions(enabled=True, num_cpus_per_worker=8)
    assert worker_count(cpu, {"CPU": 96.0}, shards=100) == 12                 # CPU-only clients of a server


def test_more_workers_than_the_cluster_can_place_fail_at_start_naming_both() -> None:
    eight = RayOptions(enabled=True, num_workers=8, num_gpus_per_worker=1, num_cpus_per_worker=8)
    with pytest.raises(ValueError, match=r"num_workers is 8, but the cluster has 2 GPU and 64 CPU: only 2 worker"):
        worker_count(eight, {"GPU": 2.0, "CPU": 64.0}, shards=100)
    with pytest.raises(ValueError, match=r"has 0 GPU and 16 CPU; not one worker of 1 GPU \+ 8 CPU each"):
        worker_count(eight.model_copy(update={"num_workers": "auto"}), {"CPU": 16.0}, shards=100)
    assert worker_count(eight, {"GPU": 8.0, "CPU": 64.0}, shards=100) == 8
    with pytest.raises(ValueError):
        RayOptions(num_workers=0)


@pytest.mark.slow
def test_a_ray_cluster_without_the_gpus_fails_before_any_actor_starts(tiny_root_session, tmp_path) -> None:
    ray = pytest.importorskip("ray")
    from rare.enhance.side import enhance_side
    from tests.fixtures.enhance import FAKE_IDENTITY, FakeBackend

    params = EnhanceParams(cache_dir=str(tmp_path / "cache"), shard_size=4,
                           ray={"enabled": True, "num_workers": 2, "num_gpus_per_worker": 1, "num_cpus_per_worker": 1})
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, configure_logging=False)
    try:
        with pytest.raises(ValueError, match="cluster has 0 GPU and 2 CPU; not one worker"):
            enhance_side(params, tiny_root_session, tmp_path / "out", "corpus", make_backend=FakeBackend,
                         identity=FAKE_IDENTITY, progress=False)
    finally:
        ray.shutdown()


def test_filesystem_type_takes_the_longest_mount_point() -> None:
    assert filesystem_type("/shared/run/cache.sqlite", MOUNTS) == "nfs4"
    assert filesystem_type("/shared/local disk/x", MOUNTS) == "xfs"
    assert filesystem_type("/sharedother/x", MOUNTS) == "ext4"
    assert filesystem_type("/tmp/x", MOUNTS) == "tmpfs"


def test_an_item_cache_on_a_network_filesystem_uses_the_rollback_journal(tmp_path, monkeypatch) -> None:
    import rare.enhance.cache as cache_module

    assert journal_mode(tmp_path / "cache.sqlite") == "WAL"
    monkeypatch.setattr(cache_module, "filesystem_type", lambda path, mounts=None: "nfs4")
    cache = Cache(tmp_path / "nfs" / "cache.sqlite")
    cache.close()
    mode = sqlite3.connect(tmp_path / "nfs" / "cache.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "delete" and cache.journal_mode == "DELETE"


def test_shards_on_shared_storage_and_the_item_cache_on_local_disk(tmp_path) -> None:
    from rare.data.layout import MBEIRRoot
    from rare.enhance.engine import EngineConfig
    from tests.fixtures.tiny_root import make_tiny_root

    root = MBEIRRoot(make_tiny_root(tmp_path / "M-BEIR"))
    params = EnhanceParams(cache_dir=str(tmp_path / "shared"), item_cache_dir=str(tmp_path / "local"))
    config = EngineConfig.from_params(params, root, "corpus")
    assert config.cache_dir == tmp_path / "shared" and config.item_cache == tmp_path / "local/cache.sqlite"
    single = EngineConfig.from_params(EnhanceParams(cache_dir=str(tmp_path / "one")), root, "corpus")
    assert single.item_cache == tmp_path / "one/cache.sqlite"
