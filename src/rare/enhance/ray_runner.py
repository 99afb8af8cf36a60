"""Optional scale-out on Ray: one actor per worker (one per GPU), each holding its own engine.

Shards are the unit of work, exactly as in the single-process path, and every actor writes into
the same shard store (a shared filesystem on a real cluster) and its node's item cache
(``enhance.item_cache_dir``, node-local). The driver only plans and assembles, so the output is
byte-identical to a single-process run.

How many actors run is decided against the resources the cluster really has, before any actor
is created: an actor that can never be scheduled would leave ``map_unordered`` waiting forever.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping

from rare.config.enhance import RayOptions
from rare.enhance.backends.interface import Backend
from rare.enhance.engine import Engine, EngineConfig, Progress, Shard, ShardStats


class ShardWorker:
    def __init__(self, config: EngineConfig, make_backend: Callable[[], Backend]):
        from rare import runtime

        runtime.configure()
        self.engine = Engine(config, make_backend)

    def process(self, shard: Shard) -> ShardStats:
        return self.engine.process(shard)


def placeable_workers(options: RayOptions, resources: Mapping[str, float]) -> int:
    """How many workers of this shape the cluster's total resources fit (GPUs and CPUs both bind)."""
    fits = []
    for key, need in (("GPU", options.num_gpus_per_worker), ("CPU", options.num_cpus_per_worker)):
        if need > 0:
            fits.append(math.floor(resources.get(key, 0.0) / need + 1e-9))
    return min(fits) if fits else 1 << 30


def worker_count(options: RayOptions, resources: Mapping[str, float], shards: int) -> int:
    """``auto``: what the cluster can place; an explicit count it cannot place is an error, raised at start."""
    fits = placeable_workers(options, resources)
    have = f"{resources.get('GPU', 0.0):g} GPU and {resources.get('CPU', 0.0):g} CPU"
    shape = f"{options.num_gpus_per_worker:g} GPU + {options.num_cpus_per_worker:g} CPU each"
    if fits < 1:
        raise ValueError(f"enhance.ray: the cluster has {have}; not one worker of {shape} can be placed")
    if options.num_workers != "auto" and options.num_workers > fits:
        raise ValueError(f"enhance.ray.num_workers is {options.num_workers}, but the cluster has {have}: only {fits} "
                         f"worker(s) of {shape} can be placed. Set num_workers: auto (or {fits}), or add nodes")
    wanted = fits if options.num_workers == "auto" else options.num_workers
    return max(1, min(wanted, shards))


def run_on_ray(options: RayOptions, config: EngineConfig, make_backend: Callable[[], Backend],
               shards: list[Shard], progress: Progress | None = None) -> list[ShardStats]:
    import ray
    from ray.util import ActorPool

    started = not ray.is_initialized()
    if started:
        ray.init(address=options.address, include_dashboard=False, configure_logging=False)
    actors: list = []
    done: list[ShardStats] = []
    try:
        count = worker_count(options, ray.cluster_resources(), len(shards))
        print(f"enhance: {count} Ray worker(s) of {options.num_gpus_per_worker:g} GPU + "
              f"{options.num_cpus_per_worker:g} CPU for {len(shards)} shard(s)", file=sys.stderr, flush=True)
        worker = ray.remote(num_cpus=options.num_cpus_per_worker, num_gpus=options.num_gpus_per_worker)(ShardWorker)
        actors = [worker.options(max_restarts=1, max_task_retries=2).remote(config, make_backend)
                  for _ in range(count)]
        for stats in ActorPool(actors).map_unordered(lambda actor, shard: actor.process.remote(shard), shards):
            done.append(stats)
            if progress:
                progress(stats.items)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
    return done
